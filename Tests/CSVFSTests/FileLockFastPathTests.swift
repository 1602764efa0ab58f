import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// The fast path of the cluster-wide file locks: a node that alone locks a file keeps the file's locks
/// itself, and gives them back when another node asks.
extension Mounted {
    @Suite struct FileLockFastPathTests {
        typealias Locks = FileLockTests

        /// The metadata calls the node has sent, of every kind, and the DLM requests it has made, from its
        /// metrics.
        static func calls(_ port: Int) throws -> (metadata: Double, dlm: Double) {
            let metrics = try MetricsTests.fetch("http://127.0.0.1:\(port)/metrics")
            try #require(metrics.succeeded, "\(metrics)")
            let lines = metrics.stdout.split(separator: "\n")
            let metadata = lines.filter { $0.hasPrefix("csvfs_metadata_rpcs_total{") }
                .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
            let dlm = try #require(MetricsTests.sample(metrics.stdout, "csvfs_dlm_lock_wait_seconds_count"),
                                   "no DLM request count: \(metrics.stdout)")
            return (metadata, dlm)
        }

        @Test func aNodeAloneOnAFileLocksTestsAndUnlocksWithoutAskingAnyone() throws {
            try MetricsTests.withSecondNodeExportingMetrics { volume, second, port in
                try writeFile(second + "/f", [1, 2, 3])
                let fd = try sys("open") { open(second + "/f", O_RDWR) }
                defer { close(fd) }
                // The first lock takes the file's DLM lock and the coordinator's locks of it.
                #expect(Locks.setLock(fd, F_WRLCK, 0, 10) == 0)
                #expect(Locks.setLock(fd, F_UNLCK, 0, 10) == 0)
                let before = try Self.calls(port)
                for index in 0..<200 {
                    #expect(Locks.setLock(fd, F_WRLCK, index, 1) == 0)
                    #expect(Locks.setLock(fd, F_RDLCK, 1000 + index, 1, command: Locks.ofdSetLock) == 0)
                    #expect(try Locks.lockInTheWay(fd, index, 1).l_type == Int16(F_UNLCK), "its own lock is no conflict")
                    #expect(Locks.setLock(fd, F_UNLCK, index, 1) == 0)
                }
                #expect(flock(fd, LOCK_EX | LOCK_NB) == 0 && flock(fd, LOCK_UN) == 0)
                let after = try Self.calls(port)
                #expect(after.metadata == before.metadata, "\(after.metadata - before.metadata) metadata calls for 801 lock calls")
                #expect(after.dlm == before.dlm, "\(after.dlm - before.dlm) DLM requests")

                // The other node sees them: its F_GETLK names the lock this node holds, its own lock is refused.
                #expect(Locks.setLock(fd, F_WRLCK, 0, 10) == 0)
                let other = try sys("open") { open(volume.mountpoint + "/f", O_RDWR) }
                defer { close(other) }
                let held = try Locks.lockInTheWay(other, 5, 1)
                #expect(held.l_type == Int16(F_WRLCK) && held.l_start == 0 && held.l_len == 10 && held.l_pid == getpid(), "\(held)")
                #expect(try Locks.lockInTheWay(other, 1100, 1, command: Locks.ofdGetLock).l_type == Int16(F_RDLCK),
                        "the OFD read locks too")
                #expect(Locks.setLock(other, F_WRLCK, 5, 1) == EAGAIN)
                #expect(Locks.setLock(fd, F_UNLCK, 0, 10) == 0, "the unlock after the hand-back reaches the coordinator")
                #expect(Locks.setLock(other, F_WRLCK, 5, 1) == 0)
                #expect(Locks.setLock(fd, F_WRLCK, 5, 1) == EAGAIN, "and the first node now asks it")
                #expect(Locks.setLock(other, F_UNLCK, 5, 1) == 0)
                #expect(eventually { Locks.setLock(fd, F_WRLCK, 5, 1) == 0 }, "the bytes are free again")
            }
        }

        /// A lock that must wait for another process of the same node waits at the coordinator (every wait
        /// does, so a deadlock across nodes is seen there), and is granted when the holder closes.
        @Test func aWaitOnAFileTheNodeKeepsIsGrantedWhenTheHolderCloses() throws {
            try Locks.withTwoNodes { volume, nodes in
                let holder = try LockAgent(nodes[1] + "/f", ["lock posix W 0 10", "lock ofd R 50 1", "hold"], directory: volume.directory)
                defer { holder.finish() }
                #expect(holder.answer(2) == "holding", "\(holder.errors)")
                let waiter = try LockAgent(nodes[1] + "/f", ["lockw posix W 5 1", "hold"], directory: volume.directory)
                defer { waiter.finish() }
                #expect(waiter.answer(0, timeout: 1) == nil, "granted while held: \(waiter.errors)")
                let fd = try sys("open") { open(nodes[0] + "/f", O_RDWR) }
                defer { close(fd) }
                // Bytes 0-19 only: over 0-99 the OFD lock on byte 50 conflicts too, and F_GETLK names either.
                let held = try Locks.lockInTheWay(fd, 0, 20)
                #expect(held.l_start == 0 && held.l_len == 10 && held.l_pid == holder.process.pid, "\(held)")
                #expect(holder.finish() == 0)
                #expect(waiter.answer(0) == "ok", "\(waiter.errors)")
                let now = try Locks.lockInTheWay(fd, 0, 20)
                #expect(now.l_start == 5 && now.l_len == 1 && now.l_pid == waiter.process.pid, "\(now)")
                #expect(Locks.setLock(fd, F_WRLCK, 50, 1, command: Locks.ofdSetLock) == 0, "the holder's OFD lock went with its close")
            }
        }

        /// Locks a node keeps itself are given back to a new coordinator, which knows nothing of them, and
        /// stay held.
        @Test func locksTheNodeKeepsAreKeptAcrossACoordinatorFailover() throws {
            try Locks.withTwoNodes { volume, nodes in
                try ClusterJoinTests.withSecondMountpoint(volume) { third in
                    let joined = try volume.csvfs(["mount", volume.lun, third], timeout: 90)
                    try #require(joined.succeeded, "\(joined)")
                    let holder = try LockAgent(nodes[1] + "/f", ["lock posix W 0 10", "lock flock W 0 0", "hold"], directory: volume.directory)
                    defer { holder.finish() }
                    #expect(holder.answer(2) == "holding", "\(holder.errors)")

                    try volume.killCoordinator()
                    Locks.expectNewCoordinator(volume, through: third)
                    let fd = try sys("open") { open(third + "/f", O_RDWR) }
                    defer { close(fd) }
                    #expect(Locks.setLock(fd, F_WRLCK, 5, 1) == EAGAIN, "the POSIX lock is kept across the failover")
                    #expect(errnoOf { flock(fd, LOCK_EX | LOCK_NB) } == EWOULDBLOCK, "and the flock")
                    let held = try Locks.lockInTheWay(fd, 0, 100)
                    #expect(held.l_start == 0 && held.l_len == 10 && held.l_pid == holder.process.pid, "\(held)")
                    let status = try volume.csvfs(["status", third])
                    #expect(status.stdout.contains("posix  exclusive  0-9"), "\(status.stdout)")
                    #expect(holder.finish() == 0)
                    #expect(eventually { Locks.setLock(fd, F_WRLCK, 0, 10) == 0 }, "the holder's close released them")
                }
            }
        }
    }
}
