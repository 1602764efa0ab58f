import Foundation
import TestSupport
import Glibc
import Testing

/// SIGKILL the serving process at random moments of a syncing workload (every fourth round while it
/// unmounts), many rounds: each time the volume passes fsck, mounts, and every fsync'd (or syncfs'd)
/// file is byte-identical.
extension Mounted {
    @Suite struct CrashTests {
        @Test func sigkillAtRandomMomentsKeepsEverySyncedFile() throws {
            let seed = SeededRandom.seed(from: "CSVFS_CRASH_SEED", test: "crash test")
            let rounds = ProcessInfo.processInfo.environment["CSVFS_CRASH_ROUNDS"].flatMap { Int($0) } ?? 20
            var random = SeededRandom(seed: seed)
            let journal = CrashJournal()
            var totalOperations = 0

            try withVolume(size: "512M", mounted: false) { volume in
                for round in 0..<rounds {
                    try volume.mount()
                    try Self.verify(journal, in: volume, after: "round \(round) (seed \(seed))")
                    // Two workloads at once, so several requests are in flight when the server dies.
                    let done = DispatchSemaphore(value: 0)
                    let operations = Locked(0)
                    let stop = Locked(false)
                    for thread in 0..<2 {
                        let directory = "t\(thread)-r\(round)"
                        try sys("mkdir") { mkdir(volume.path(directory), 0o755) }
                        let workload = CrashWorkload(mountpoint: volume.mountpoint, directory: directory,
                                                     owner: "t\(thread)-", seed: random.next(), journal: journal, stop: stop)
                        Thread.detachNewThread {
                            let count = workload.run()
                            operations.withLock { $0 += count }
                            done.signal()
                        }
                    }
                    usleep(UInt32.random(in: 20_000...700_000, using: &random))
                    let killDuringUnmount = round % 4 == 3
                    if killDuringUnmount {
                        stop.withLock { $0 = true }
                    } else {
                        try volume.crash()
                    }
                    for _ in 0..<2 {
                        #expect(done.wait(timeout: .now() + 60) == .success, "round \(round): the workloads stop")
                    }
                    if killDuringUnmount {
                        try volume.crashDuringUnmount(after: UInt32.random(in: 0...30_000, using: &random))
                    }
                    totalOperations += operations.withLock { $0 }
                    journal.dropPending()

                    let fsck = try volume.fsck()
                    #expect(fsck.succeeded, "round \(round) (seed \(seed)): fsck after SIGKILL: \(fsck)")
                    if !fsck.succeeded { break }
                }
                try volume.mount()
                try Self.verify(journal, in: volume, after: "the last round (seed \(seed))")
                try volume.unmount()
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
            }
            let tracked = journal.tracked
            print("crash test: \(rounds) rounds, \(totalOperations) operations, \(tracked.count) paths checked")
            #expect(tracked.values.filter { $0.first != .absent }.count >= rounds, "the workload made files durable")
        }

        /// Every tracked path is in one of its acceptable states; then that state is the expectation from now on.
        static func verify(_ journal: CrashJournal, in volume: TestVolume, after moment: String) throws {
            for (relative, acceptable) in journal.tracked.sorted(by: { $0.key < $1.key }) {
                let path = volume.path(relative)
                let found: CrashJournal.State?
                if access(path, F_OK) != 0 && errno == ENOENT {
                    found = acceptable.contains(.absent) ? .absent : nil
                } else {
                    let bytes = try readFile(path)
                    found = acceptable.first { $0.bytes == bytes }
                }
                guard let found else {
                    let actual = (try? lstatOrThrow(path)).map { "\($0.st_size) bytes" } ?? "absent"
                    Issue.record("after \(moment): \(relative) is \(actual), expected one of \(acceptable)")
                    continue
                }
                journal.settle(relative, to: found)
            }
        }
    }
}
