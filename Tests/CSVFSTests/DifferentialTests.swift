import Foundation
import TestSupport
import Glibc
import Testing

/// One seeded random sequence of file operations applied to a CSVFS mount and to a plain directory:
/// every result (errno or bytes) and the final trees must be identical.
extension Mounted {
    @Suite struct DifferentialTests {
        @Test(arguments: MetadataMode.allCases) func randomOperationsMatchAPlainDirectory(_ metadataMode: MetadataMode) throws {
            let seed = SeededRandom.seed(from: "CSVFS_SEED", test: "differential test")
            let count = ProcessInfo.processInfo.environment["CSVFS_DIFF_OPS"].flatMap { Int($0) } ?? 2000
            var random = SeededRandom(seed: seed)
            try withVolume(metadataMode) { volume in
                let reference = volume.directory.appendingPathComponent("reference").path
                try sys("mkdir reference") { mkdir(reference, 0o755) }
                var mismatches = 0, succeeded = 0
                for step in 0..<count {
                    let namespace = try RandomFileOperation.Namespace(root: reference)
                    let operation = RandomFileOperation.random(in: namespace, using: &random)
                    let onCSVFS = operation.apply(in: volume.mountpoint), onPlain = operation.apply(in: reference)
                    if onPlain.errno == 0 { succeeded += 1 }
                    if onCSVFS != onPlain {
                        mismatches += 1
                        Issue.record("seed \(seed) step \(step): \(operation): csvfs \(onCSVFS), plain directory \(onPlain)")
                        if mismatches >= 10 { break }
                    }
                    if step % 500 == 499 || step == count - 1 {
                        let differences = try TreeSnapshot(root: volume.mountpoint).differences(from: TreeSnapshot(root: reference))
                        #expect(differences.isEmpty, "seed \(seed) after step \(step): \(differences.joined(separator: "\n"))")
                        if !differences.isEmpty { break }
                    }
                }
                let final = try TreeSnapshot(root: reference)
                print("differential test: \(count) operations (\(succeeded) succeeded), \(final.entries.count) entries in the final tree")
                #expect(final.entries.count >= 5, "the sequence built a tree worth comparing")
                // About a quarter to a third succeed (most random names do not exist yet); an eighth is far below any seed's share.
                #expect(succeeded >= count / 8, "enough operations did something: \(succeeded) of \(count) succeeded")
                // The same tree after an unmount, a clean fsck and a remount.
                try volume.unmount()
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
                try volume.mount()
                let differences = try TreeSnapshot(root: volume.mountpoint).differences(from: final)
                #expect(differences.isEmpty, "seed \(seed) after remount: \(differences.joined(separator: "\n"))")
            }
        }

        /// Two nodes of one cluster: each operation of one seeded sequence goes to a random node's mount, and
        /// after every one the other node's view equals the plain directory: what one node did, the other sees
        /// on its next call. Replay with CSVFS_SEED.
        @Test func twoNodesSeeEachOthersChangesAfterEveryOperation() throws {
            let seed = SeededRandom.seed(from: "CSVFS_SEED", test: "two-node differential test")
            let count = ProcessInfo.processInfo.environment["CSVFS_DIFF_OPS"].flatMap { Int($0) } ?? 400
            var random = SeededRandom(seed: seed)
            try withVolume(.follower) { volume in
                let nodes = [volume.coordinatorMountpoint, volume.mountpoint]
                let reference = volume.directory.appendingPathComponent("reference").path
                try sys("mkdir reference") { mkdir(reference, 0o755) }
                var succeeded = 0, onEach = [0, 0]
                for step in 0..<count {
                    let namespace = try RandomFileOperation.Namespace(root: reference)
                    let operation = RandomFileOperation.random(in: namespace, using: &random)
                    let node = Int.random(in: 0...1, using: &random)
                    onEach[node] += 1
                    let onCSVFS = operation.apply(in: nodes[node]), onPlain = operation.apply(in: reference)
                    if onPlain.errno == 0 { succeeded += 1 }
                    guard onCSVFS == onPlain else {
                        Issue.record("seed \(seed) step \(step) on node \(node + 1): \(operation): csvfs \(onCSVFS), plain directory \(onPlain)")
                        break
                    }
                    let other = nodes[1 - node]
                    let differences = try TreeSnapshot(root: other).differences(from: TreeSnapshot(root: reference))
                    guard differences.isEmpty else {
                        Issue.record("seed \(seed) step \(step): after \(operation) on node \(node + 1), node \(2 - node) sees: \(differences.joined(separator: "\n"))")
                        break
                    }
                }
                print("two-node differential test: seed \(seed), \(count) operations (\(succeeded) succeeded), \(onEach[0]) on the coordinator, \(onEach[1]) on the other node")
                // About a quarter to a third succeed (most random names do not exist yet); an eighth is far below any seed's share.
                #expect(succeeded >= count / 8, "enough operations did something: \(succeeded) of \(count) succeeded")
                #expect(onEach.allSatisfy { $0 >= count / 4 }, "both nodes took a share: \(onEach)")
            }
        }
    }
}
