import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// POSIX record, OFD and flock locks between processes on two nodes' mounts, through the kernel: each node's
/// kernel sends its locks to the filesystem, which keeps them for the whole cluster.
extension Mounted {
    @Suite struct FileLockTests {
        static let ofdGetLock: Int32 = 36, ofdSetLock: Int32 = 37

        /// `body(volume, [coordinator's mountpoint, other node's mountpoint])` with a file "f" on the volume.
        static func withTwoNodes(_ body: (TestVolume, [String]) throws -> Void) throws {
            try withVolume(.follower) { volume in
                try writeFile(volume.mountpoint + "/f", patternBytes(count: 4096, seed: 1))
                try body(volume, [volume.coordinatorMountpoint, volume.mountpoint])
            }
        }

        /// fcntl's errno for a lock request (0: done).
        static func setLock(_ fd: Int32, _ type: Int32, _ start: Int, _ length: Int, command: Int32 = F_SETLK) -> Int32 {
            var request = flock(l_type: Int16(type), l_whence: Int16(SEEK_SET), l_start: off_t(start), l_len: off_t(length), l_pid: 0)
            return fcntl(fd, command, &request) == 0 ? 0 : errno
        }

        /// The lock in the way of a write lock on the range, as F_GETLK (or F_OFD_GETLK) answers it.
        static func lockInTheWay(_ fd: Int32, _ start: Int, _ length: Int, command: Int32 = F_GETLK) throws -> flock {
            var request = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: off_t(start), l_len: off_t(length), l_pid: 0)
            _ = try sys("fcntl F_GETLK") { fcntl(fd, command, &request) }
            return request
        }

        /// Waits until `csvfs status` through `mountpoint` names a coordinator other than node 1 (the one killed).
        static func expectNewCoordinator(_ volume: TestVolume, through mountpoint: String) {
            var coordinator: UInt32?
            #expect(eventually(30) {
                let result = try? volume.csvfs(["status", mountpoint, "--json"])
                coordinator = result.flatMap { try? JSONDecoder().decode(StatusReport.self, from: Data($0.stdout.utf8)) }?.coordinator?.node
                return coordinator != nil && coordinator != 1
            }, "no new coordinator: \(String(describing: coordinator))")
        }

        @Test(arguments: [0, 1]) func recordLocksConflictSplitAndMergeAcrossNodes(_ holder: Int) throws {
            try Self.withTwoNodes { volume, nodes in
                let agent = try LockAgent(nodes[holder] + "/f", [
                    "lock posix W 0 100", "lock posix R 200 100", "lock posix U 40 20",
                    "lock posix W 1000 10", "lock posix W 1010 10", "hold",
                ], directory: volume.directory)
                defer { agent.finish() }
                #expect(agent.answer(5) == "holding", "\(agent.errors)")
                let fd = try sys("open") { open(nodes[1 - holder] + "/f", O_RDWR) }
                defer { close(fd) }

                #expect(Self.setLock(fd, F_WRLCK, 10, 10) == EAGAIN, "inside the other node's write lock")
                #expect(Self.setLock(fd, F_RDLCK, 250, 1) == 0, "a read lock beside the other node's")
                #expect(Self.setLock(fd, F_WRLCK, 250, 1) == EAGAIN, "a write lock over the other node's read lock")
                #expect(Self.setLock(fd, F_WRLCK, 40, 20) == 0, "the range the other node unlocked in the middle")
                #expect(Self.setLock(fd, F_WRLCK, 39, 1) == EAGAIN && Self.setLock(fd, F_WRLCK, 60, 1) == EAGAIN,
                        "either side of the split is still held")
                #expect(Self.setLock(fd, F_WRLCK, 100, 100) == 0, "the bytes between the other node's locks")

                let held = try Self.lockInTheWay(fd, 70, 10)
                #expect(held.l_type == Int16(F_WRLCK) && held.l_start == 60 && held.l_len == 40 && held.l_pid == agent.process.pid,
                        "F_GETLK names the other node's lock and process: \(held)")
                let merged = try Self.lockInTheWay(fd, 1005, 1)
                #expect(merged.l_start == 1000 && merged.l_len == 20, "two adjacent locks of one owner are one: \(merged)")
                #expect(try Self.lockInTheWay(fd, 5000, 1).l_type == Int16(F_UNLCK))

                #expect(agent.finish() == 0)
                #expect(Self.setLock(fd, F_WRLCK, 0, 100) == 0, "the holder's exit (its close) released its locks")
                #expect(Self.setLock(fd, F_WRLCK, 1000, 0) == 0, "to the end of the file")
            }
        }

        /// QEMU's image locking: shared OFD locks on single bytes, tested with F_OFD_GETLK.
        @Test func ofdLocksAsQEMUTakesThemAcrossNodes() throws {
            try Self.withTwoNodes { volume, nodes in
                let agent = try LockAgent(nodes[0] + "/f", ["lock ofd R 100 1", "lock ofd W 200 1", "hold"], directory: volume.directory)
                defer { agent.finish() }
                #expect(agent.answer(2) == "holding", "\(agent.errors)")
                let fd = try sys("open") { open(nodes[1] + "/f", O_RDWR) }
                defer { close(fd) }
                #expect(try Self.lockInTheWay(fd, 100, 1, command: Self.ofdGetLock).l_type == Int16(F_RDLCK), "the other node's shared lock")
                #expect(try Self.lockInTheWay(fd, 101, 99, command: Self.ofdGetLock).l_type == Int16(F_UNLCK))
                #expect(Self.setLock(fd, F_RDLCK, 100, 1, command: Self.ofdSetLock) == 0, "shared with shared")
                #expect(Self.setLock(fd, F_WRLCK, 100, 1, command: Self.ofdSetLock) == EAGAIN)
                #expect(Self.setLock(fd, F_RDLCK, 200, 1, command: Self.ofdSetLock) == EAGAIN, "the other node's exclusive lock")
                #expect(agent.finish() == 0)
                // The kernel releases an open file asynchronously after the close returned.
                #expect(eventually { Self.setLock(fd, F_WRLCK, 200, 1, command: Self.ofdSetLock) == 0 },
                        "the holder's close released its OFD locks")
            }
        }

        @Test func flockLocksAcrossNodesAreApartFromRecordLocks() throws {
            try Self.withTwoNodes { volume, nodes in
                let exclusive = try LockAgent(nodes[1] + "/f", ["lock flock W 0 0", "hold"], directory: volume.directory)
                defer { exclusive.finish() }
                #expect(exclusive.answer(1) == "holding", "\(exclusive.errors)")
                let fd = try sys("open") { open(nodes[0] + "/f", O_RDWR) }
                defer { close(fd) }
                #expect(errnoOf { flock(fd, LOCK_EX | LOCK_NB) } == EWOULDBLOCK)
                #expect(errnoOf { flock(fd, LOCK_SH | LOCK_NB) } == EWOULDBLOCK)
                #expect(Self.setLock(fd, F_WRLCK, 0, 0) == 0, "flock and record locks do not conflict")
                #expect(exclusive.finish() == 0)
                #expect(eventually { flock(fd, LOCK_EX | LOCK_NB) == 0 }, "the holder's close released its flock")
                #expect(flock(fd, LOCK_UN) == 0)

                let shared = try LockAgent(nodes[1] + "/f", ["lock flock R 0 0", "hold"], directory: volume.directory)
                defer { shared.finish() }
                #expect(shared.answer(1) == "holding", "\(shared.errors)")
                #expect(flock(fd, LOCK_SH | LOCK_NB) == 0, "shared with shared")
                #expect(errnoOf { flock(fd, LOCK_EX | LOCK_NB) } == EWOULDBLOCK, "no upgrade while the other node shares it")
            }
        }

        @Test func aKilledHoldersLocksGo() throws {
            try Self.withTwoNodes { volume, nodes in
                let agent = try LockAgent(nodes[1] + "/f", ["lock posix W 0 1", "lock ofd W 10 1", "lock flock W 0 0", "hold"],
                                          directory: volume.directory)
                defer { agent.finish() }
                #expect(agent.answer(3) == "holding", "\(agent.errors)")
                let fd = try sys("open") { open(nodes[0] + "/f", O_RDWR) }
                defer { close(fd) }
                #expect(Self.setLock(fd, F_WRLCK, 0, 1) == EAGAIN && Self.setLock(fd, F_WRLCK, 10, 1, command: Self.ofdSetLock) == EAGAIN)
                agent.process.kill()
                #expect(eventually { Self.setLock(fd, F_WRLCK, 0, 1) == 0 }, "its POSIX lock")
                #expect(eventually { Self.setLock(fd, F_WRLCK, 10, 1, command: Self.ofdSetLock) == 0 }, "its OFD lock")
                #expect(eventually { flock(fd, LOCK_EX | LOCK_NB) == 0 }, "its flock")
            }
        }

        @Test(arguments: [0, 1]) func aBlockedLockIsGrantedWhenTheOtherNodeUnlocks(_ waiter: Int) throws {
            try Self.withTwoNodes { volume, nodes in
                let fd = try sys("open") { open(nodes[1 - waiter] + "/f", O_RDWR) }
                defer { close(fd) }
                #expect(Self.setLock(fd, F_WRLCK, 0, 10) == 0)
                let agent = try LockAgent(nodes[waiter] + "/f", ["lockw posix W 5 1", "hold"], directory: volume.directory)
                defer { agent.finish() }
                #expect(agent.answer(0, timeout: 1) == nil, "granted while the other node held it: \(agent.errors)")
                #expect(Self.setLock(fd, F_UNLCK, 0, 10) == 0)
                #expect(agent.answer(0) == "ok", "\(agent.errors)")
                let held = try Self.lockInTheWay(fd, 0, 10)
                #expect(held.l_start == 5 && held.l_len == 1 && held.l_pid == agent.process.pid, "\(held)")
            }
        }

        @Test func aSignalInterruptsTheWait() throws {
            try Self.withTwoNodes { volume, nodes in
                let fd = try sys("open") { open(nodes[0] + "/f", O_RDWR) }
                defer { close(fd) }
                #expect(Self.setLock(fd, F_WRLCK, 0, 10) == 0)
                let agent = try LockAgent(nodes[1] + "/f", ["alarm 1", "lockw posix W 0 1", "hold"], directory: volume.directory)
                defer { agent.finish() }
                #expect(agent.answer(1) == "EINTR", "\(agent.errors)")
                #expect(agent.answer(2) == "holding")
                #expect(Self.setLock(fd, F_UNLCK, 0, 10) == 0)
                usleep(200_000)
                #expect(try Self.lockInTheWay(fd, 0, 10).l_type == Int16(F_UNLCK), "the interrupted wait left nothing queued")
            }
        }

        @Test func statusListsTheFileLocksOfEveryNode() throws {
            try Self.withTwoNodes { volume, nodes in
                let agent = try LockAgent(nodes[0] + "/f", ["lock posix W 10 10", "lock flock R 0 0", "hold"], directory: volume.directory)
                defer { agent.finish() }
                #expect(agent.answer(2) == "holding", "\(agent.errors)")
                let fd = try sys("open") { open(nodes[1] + "/f", O_RDWR) }
                defer { close(fd) }
                #expect(Self.setLock(fd, F_RDLCK, 100, 0, command: Self.ofdSetLock) == 0)
                let result = try volume.csvfs(["status", nodes[1], "--json"])
                try #require(result.succeeded, "\(result)")
                let status = try JSONDecoder().decode(StatusReport.self, from: Data(result.stdout.utf8))
                let locks = Dictionary(uniqueKeysWithValues: status.nodes.map { ($0.id, Set($0.fileLocks ?? [])) })
                let holder = UInt32(agent.process.pid)
                #expect(locks[1] == [.init(node: 1, path: "/f", kind: "posix", mode: "exclusive", start: 10, end: 19, pid: holder),
                                     .init(node: 1, path: "/f", kind: "flock", mode: "shared", start: 0, end: nil, pid: holder)],
                        "\(result.stdout)")
                #expect(locks[2] == [.init(node: 2, path: "/f", kind: "posix", mode: "shared", start: 100, end: nil, pid: UInt32(getpid()))],
                        "\(result.stdout)")
                let text = try volume.csvfs(["status", nodes[0]])
                #expect(text.stdout.contains("posix  exclusive  10-19") && text.stdout.contains("flock  shared     0-EOF"), "\(text.stdout)")
            }
        }

        /// The coordinator keeps the locks in memory: after it dies, the nodes that hold locks tell the next one,
        /// which grants nothing until they have.
        @Test func locksAreKeptAcrossACoordinatorFailover() throws {
            try Self.withTwoNodes { volume, nodes in
                try ClusterJoinTests.withSecondMountpoint(volume) { third in
                    let joined = try volume.csvfs(["mount", volume.lun, third], timeout: 90)
                    try #require(joined.succeeded, "\(joined)")
                    let agent = try LockAgent(nodes[1] + "/f", ["lock posix W 0 10", "lock ofd R 100 1", "hold"], directory: volume.directory)
                    defer { agent.finish() }
                    #expect(agent.answer(2) == "holding", "\(agent.errors)")
                    let fd = try sys("open") { open(third + "/f", O_RDWR) }
                    defer { close(fd) }
                    #expect(Self.setLock(fd, F_WRLCK, 5, 1) == EAGAIN)
                    let waiter = try LockAgent(third + "/f", ["lockw posix W 9 1", "hold"], directory: volume.directory)
                    defer { waiter.finish() }
                    #expect(waiter.answer(0, timeout: 1) == nil, "granted while held: \(waiter.errors)")

                    try volume.killCoordinator()
                    Self.expectNewCoordinator(volume, through: third)
                    #expect(Self.setLock(fd, F_WRLCK, 5, 1) == EAGAIN, "the POSIX lock is kept across the failover")
                    #expect(Self.setLock(fd, F_WRLCK, 100, 1, command: Self.ofdSetLock) == EAGAIN, "and the OFD lock")
                    #expect(Self.setLock(fd, F_WRLCK, 20, 10) == 0, "bytes nobody held")
                    let held = try Self.lockInTheWay(fd, 0, 100)
                    #expect(held.l_start == 0 && held.l_len == 10 && held.l_pid == agent.process.pid, "\(held)")

                    #expect(waiter.answer(0, timeout: 0.5) == nil, "the wait that began before the failover still waits")

                    #expect(agent.finish() == 0)
                    #expect(waiter.answer(0) == "ok", "the holder's close let the wait through: \(waiter.errors)")
                    #expect(eventually {
                        Self.setLock(fd, F_WRLCK, 0, 9) == 0 && Self.setLock(fd, F_WRLCK, 100, 1, command: Self.ofdSetLock) == 0
                    }, "the holder's close released them at the new coordinator")
                }
            }
        }

        /// A node that dies holds its processes' locks until the cluster drops it (the coordination backend drops
        /// a node once it is fenced: with the local backend, at once), then they go.
        @Test func aDeadNodesLocksGoOnceTheClusterDropsIt() throws {
            try Self.withTwoNodes { volume, nodes in
                try ClusterJoinTests.withSecondMountpoint(volume) { third in
                    let node = try ChildProcess(volume.binary, volume.withSecret(["mount", volume.lun, third, "--foreground"]),
                                                outputDirectory: volume.directory)
                    defer { node.kill() }
                    #expect(eventually(30) { MountTable.entry(at: third)?.fileSystemType == "fuse.csvfs" }, "\(node.stderrText)")
                    let agent = try LockAgent(third + "/f", ["lock posix W 0 1", "lock flock W 0 0", "hold"], directory: volume.directory)
                    defer { agent.process.kill() }
                    #expect(agent.answer(2) == "holding", "\(agent.errors)")
                    let fd = try sys("open") { open(nodes[1] + "/f", O_RDWR) }
                    defer { close(fd) }
                    #expect(Self.setLock(fd, F_WRLCK, 0, 1) == EAGAIN && errnoOf { flock(fd, LOCK_EX | LOCK_NB) } == EWOULDBLOCK)

                    node.kill()   // the holder stays alive, its locks unreleased by any close
                    _ = umount2(third, Int32(MNT_DETACH))
                    #expect(eventually(30) { Self.setLock(fd, F_WRLCK, 0, 1) == 0 }, "its POSIX lock went with the node")
                    #expect(eventually(30) { flock(fd, LOCK_EX | LOCK_NB) == 0 }, "its flock went with the node")
                }
            }
        }

        @Test func aDeadlockAcrossTwoNodesIsRefused() throws {
            try Self.withTwoNodes { volume, nodes in
                let go = volume.directory.appendingPathComponent("go").path
                let agents = [
                    try LockAgent(nodes[0] + "/f", ["lock posix W 0 1", "wait \(go)", "lockw posix W 1 1", "hold"], directory: volume.directory),
                    try LockAgent(nodes[1] + "/f", ["lock posix W 1 1", "wait \(go)", "lockw posix W 0 1", "hold"], directory: volume.directory),
                ]
                defer { agents.forEach { $0.finish() } }
                #expect(agents.map { $0.answer(0) } == ["ok", "ok"], "\(agents.map(\.errors))")
                #expect(FileManager.default.createFile(atPath: go, contents: nil))
                var refused: Int?
                #expect(eventually {
                    refused = agents.firstIndex { $0.answer(2, timeout: 0) == "EDEADLK" }
                    return refused != nil
                }, "neither wait was refused: \(agents.map { $0.answer(2, timeout: 0) ?? "waiting" })")
                guard let refused else { return }
                let granted = agents[1 - refused]
                #expect(granted.answer(2, timeout: 0.5) == nil, "the other waits")
                #expect(agents[refused].finish() == 0)
                #expect(granted.answer(2) == "ok", "the refused one's exit let the other through")
            }
        }
    }
}
