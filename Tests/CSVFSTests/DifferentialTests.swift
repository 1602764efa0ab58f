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
                #expect(succeeded >= count / 4, "most operations did something: \(succeeded) of \(count) succeeded")
                // The same tree after an unmount, a clean fsck and a remount.
                try volume.unmount()
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
                try volume.mount()
                let differences = try TreeSnapshot(root: volume.mountpoint).differences(from: final)
                #expect(differences.isEmpty, "seed \(seed) after remount: \(differences.joined(separator: "\n"))")
            }
        }
    }
}
