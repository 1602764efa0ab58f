import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// `csvfs mount` of a LUN that another node serves: the node joins the volume's cluster, or is refused with
/// a clear message when it cannot prove it belongs (secret, id), and never mounts then.
extension Mounted {
    @Suite struct ClusterJoinTests {
        /// A second mountpoint in the volume's directory, detached in any case when the test ends.
        static func withSecondMountpoint(_ volume: TestVolume, _ body: (String) throws -> Void) throws {
            let second = volume.directory.appendingPathComponent("mnt2").path
            try FileManager.default.createDirectory(atPath: second, withIntermediateDirectories: false)
            defer {
                if MountTable.isMounted(second) { _ = try? volume.csvfs(["unmount", second]) }
                if MountTable.isMounted(second) { _ = try? runProcess("/usr/bin/fusermount3", ["-u", "-z", second], timeout: 30) }
            }
            try body(second)
        }

        /// A refused join: non-zero exit, `why` in the message, nothing mounted, and the first node still serves.
        static func expectRefused(_ volume: TestVolume, _ arguments: [String], at second: String, saying why: String) throws {
            let result = try volume.csvfs(["mount", volume.lun, second] + arguments, timeout: 90)
            #expect(result.status != 0, "the join must fail: \(result)")
            #expect(result.stderr.contains(why), "the message says why (\(why)): \(result)")
            #expect(!MountTable.isMounted(second), "nothing mounted")
            #expect(try readFile(volume.path("first")) == Array("first".utf8), "the first node still serves")
        }

        /// `csvfs status TARGET --json` names node 1 coordinator and exactly `nodes` (id: mountpoint), all alive.
        static func expectStatus(_ volume: TestVolume, of target: String, nodes: [UInt32: String]) throws {
            let result = try volume.csvfs(["status", target, "--json"])
            try #require(result.succeeded, "\(result)")
            let status = try JSONDecoder().decode(StatusReport.self, from: Data(result.stdout.utf8))
            #expect(status.coordinator?.node == 1 && (status.coordinator?.epoch ?? 0) >= 1, "\(result.stdout)")
            #expect(Dictionary(uniqueKeysWithValues: status.nodes.map { ($0.id, $0.mountpoint ?? "") }) == nodes, "\(result.stdout)")
            #expect(status.nodes.allSatisfy { $0.alive && ($0.pid ?? 0) > 0 && $0.address?.hasPrefix("127.0.0.1:") == true }, "\(result.stdout)")
            let text = try volume.csvfs(["status", target])
            #expect(text.succeeded && text.stdout.contains("coordinator: node 1 at"), "\(text)")
        }

        static func writeSecret(_ path: String, _ text: String, mode: mode_t = 0o600) throws {
            #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
            #expect(chmod(path, mode) == 0)
        }

        @Test func secondMountJoinsTheClusterAndSharesTheNamespace() throws {
            try withVolume { volume in
                try writeFile(volume.path("first"), Array("first".utf8))
                try Self.withSecondMountpoint(volume) { second in
                    let joined = try volume.csvfs(["mount", volume.lun, second], timeout: 90)
                    try #require(joined.succeeded, "\(joined)")
                    #expect(try readFile(second + "/first") == Array("first".utf8), "the second node sees the first's file")
                    try writeFile(second + "/second", Array("from the second node".utf8))
                    #expect(try readFile(volume.path("second")) == Array("from the second node".utf8))
                    #expect(try volume.csvfs(["fsck", volume.lun, "--repair"]).status != 0, "fsck --repair refuses a mounted volume")
                    try Self.expectStatus(volume, of: second, nodes: [1: volume.mountpoint, 2: second])
                    let unmounted = try volume.csvfs(["unmount", second])
                    #expect(unmounted.succeeded, "\(unmounted)")
                    #expect(try readFile(volume.path("second")) == Array("from the second node".utf8), "the first node goes on")
                    try Self.expectStatus(volume, of: volume.lun, nodes: [1: volume.mountpoint])
                }
            }
        }

        /// `csvfs status` lists every node's open files with their paths, asked through a mount on this host
        /// (the one given, or one of the LUN's), and drops them when they are closed.
        @Test func statusListsTheOpenFilesOfEveryNode() throws {
            try withVolume { volume in
                try Self.withSecondMountpoint(volume) { second in
                    let joined = try volume.csvfs(["mount", volume.lun, second], timeout: 90)
                    try #require(joined.succeeded, "\(joined)")
                    try sys("mkdir") { mkdir(volume.path("vms"), 0o755) }
                    try writeFile(volume.path("vms/a.img"), [1])
                    try writeFile(volume.path("gone"), [2])
                    let onFirst = try sys("open") { open(volume.path("vms/a.img"), O_RDONLY) }
                    defer { close(onFirst) }
                    let onSecond = [try sys("open") { open(second + "/vms/a.img", O_RDWR) },
                                    try sys("open") { open(second + "/vms/a.img", O_RDONLY) }]
                    let unlinked = try sys("open") { open(second + "/gone", O_RDONLY) }
                    #expect(unlink(volume.path("gone")) == 0)
                    func openFiles(_ target: String) throws -> [UInt32: [StatusReport.OpenFile]] {
                        let result = try volume.csvfs(["status", target, "--json"])
                        try #require(result.succeeded, "\(result)")
                        let status = try JSONDecoder().decode(StatusReport.self, from: Data(result.stdout.utf8))
                        #expect(status.openFilesUnknown == nil, "\(result.stdout)")
                        return Dictionary(uniqueKeysWithValues: status.nodes.map { ($0.id, $0.openFiles ?? []) })
                    }
                    let expected: [UInt32: [StatusReport.OpenFile]] = [
                        1: [.init(node: 1, handles: 1, path: "/vms/a.img")],
                        2: [.init(node: 2, handles: 2, path: "/vms/a.img"), .init(node: 2, handles: 1, path: nil)],
                    ]
                    for target in [volume.mountpoint, second, volume.lun] {
                        let seen = try openFiles(target)
                        #expect(seen[1] == expected[1] && Set(seen[2]?.map { "\($0)" } ?? []) == Set(expected[2]!.map { "\($0)" }),
                                "through \(target): \(seen)")
                    }
                    let text = try volume.csvfs(["status", second])
                    #expect(text.succeeded && text.stdout.contains("/vms/a.img") && text.stdout.contains("(unlinked)"), "\(text)")
                    for fd in onSecond + [unlinked] { close(fd) }
                    #expect(try openFiles(second) == [1: expected[1]!, 2: []], "closed files are gone")
                }
            }
        }

        @Test func aWrongSecretIsRefused() throws {
            try withVolume { volume in
                try writeFile(volume.path("first"), Array("first".utf8))
                try Self.withSecondMountpoint(volume) { second in
                    let wrong = volume.directory.appendingPathComponent("wrong.secret").path
                    try Self.writeSecret(wrong, String(repeating: "ab", count: 32) + "\n")
                    try Self.expectRefused(volume, ["--secret-file", wrong], at: second, saying: "is not this volume's")
                    #expect(volume.server?.stderrText.contains("authentication") == true,
                            "the coordinator logged the refusal: \(volume.server?.stderrText ?? "")")

                    // The secret of another volume is just as wrong.
                    let other = TestVolumeLUN(directory: volume.directory)
                    #expect(try volume.csvfs(["format", other.path, "--size", "64M"]).succeeded)
                    try Self.expectRefused(volume, ["--secret-file", secretFile(of: other.path, in: volume.directory)], at: second,
                                           saying: "is not this volume's")
                }
            }
        }

        @Test func secretFilesThatCannotBeTrustedAreRefused() throws {
            try withVolume { volume in
                try writeFile(volume.path("first"), Array("first".utf8))
                try Self.withSecondMountpoint(volume) { second in
                    let missing = volume.directory.appendingPathComponent("missing.secret").path
                    try Self.expectRefused(volume, ["--secret-file", missing], at: second, saying: "cannot read the cluster secret")
                    let open = volume.directory.appendingPathComponent("open.secret").path
                    try Self.writeSecret(open, try String(contentsOfFile: volume.secretFile, encoding: .utf8), mode: 0o644)
                    try Self.expectRefused(volume, ["--secret-file", open], at: second, saying: "readable by others")
                    let garbage = volume.directory.appendingPathComponent("garbage.secret").path
                    try Self.writeSecret(garbage, "not a secret\n")
                    try Self.expectRefused(volume, ["--secret-file", garbage], at: second, saying: "is not a cluster secret")
                }
            }
        }

        @Test func aTakenNodeIDIsRefused() throws {
            try withVolume { volume in
                try writeFile(volume.path("first"), Array("first".utf8))
                try Self.withSecondMountpoint(volume) { second in
                    try Self.expectRefused(volume, ["--node", "1"], at: second, saying: "node 1 is already a live member")
                    try Self.expectRefused(volume, ["--node", "0"], at: second, saying: "--node 0")
                }
            }
        }

        /// A coordinator that stops answering while a node joins (SIGSTOP: it keeps its role, so no other
        /// node is elected): the join ends at its timeout with a message, and nothing hangs.
        @Test func aCoordinatorThatStopsAnsweringEndsTheJoinAtItsTimeout() throws {
            try withVolume { volume in
                try writeFile(volume.path("first"), Array("first".utf8))
                let coordinator = try #require(volume.server)
                try Self.withSecondMountpoint(volume) { second in
                    coordinator.signal(SIGSTOP)
                    let result: ProcessResult
                    do {
                        defer { coordinator.signal(SIGCONT) }
                        result = try volume.csvfs(["mount", volume.lun, second, "--join-timeout", "3"], timeout: 90)
                    }
                    #expect(result.status != 0 && result.stderr.contains("did not accept this node"), "\(result)")
                    #expect(!MountTable.isMounted(second))
                    #expect(try readFile(volume.path("first")) == Array("first".utf8), "the coordinator serves again")
                    // Once it answers again, the same node joins.
                    let joined = try volume.csvfs(["mount", volume.lun, second], timeout: 90)
                    #expect(joined.succeeded, "\(joined)")
                    #expect(try readFile(second + "/first") == Array("first".utf8))
                }
            }
        }

        /// The coordinator dies (SIGKILL) while a node joins: the joining node is elected in its place, opens
        /// the database from the LUN, and serves everything the dead coordinator had acknowledged.
        @Test func aCoordinatorThatDiesDuringTheJoinIsReplacedByTheJoiningNode() throws {
            try withVolume { volume in
                try writeFile(volume.path("first"), Array("first".utf8), fsync: true)
                let coordinator = try #require(volume.server)
                try Self.withSecondMountpoint(volume) { second in
                    let joining = try ChildProcess(volume.binary, volume.withSecret(["mount", volume.lun, second, "--foreground"]),
                                                   outputDirectory: volume.directory)
                    defer { joining.kill() }
                    // Killed once the joining node follows it, before its mount is ready.
                    let following = Date().addingTimeInterval(30)
                    while !joining.stderrText.contains("coordinator is node 1") {
                        try #require(Date() < following && joining.isRunning, "the joining node never followed node 1: \(joining.stderrText)")
                        usleep(2_000)
                    }
                    #expect(!MountTable.isMounted(second), "the kill lands during the join")
                    coordinator.kill()
                    try volume.crash() // detaches the dead coordinator's mount
                    let deadline = Date().addingTimeInterval(60)
                    while MountTable.entry(at: second)?.fileSystemType != "fuse.csvfs" {
                        if let status = joining.wait(timeout: 0) {
                            Issue.record("the joining node exited: \(joining.result(status: status))")
                            return
                        }
                        try #require(Date() < deadline, "not mounted within 60 s: \(joining.stderrText)")
                        usleep(20_000)
                    }
                    #expect(try readFile(second + "/first") == Array("first".utf8), "what the dead coordinator acknowledged is there")
                    try writeFile(second + "/after", Array("after".utf8))
                    #expect(try readFile(second + "/after") == Array("after".utf8))
                    let status = try volume.csvfs(["status", second])
                    #expect(status.succeeded && status.stdout.contains("coordinator: node 2 at"), "the joining node leads: \(status)")
                    let unmounted = try volume.csvfs(["unmount", second])
                    #expect(unmounted.succeeded, "\(unmounted)")
                    #expect(joining.wait(timeout: 30) == 0, "\(joining.stderrText)")
                    let fsck = try volume.fsck()
                    #expect(fsck.succeeded, "\(fsck)")
                }
            }
        }
    }
}
