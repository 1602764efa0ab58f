import Foundation
import Glibc
import Primitives
import Testing
import TestSupport

/// Power cuts in the LUN's write stream, as CrashMonkey makes them: one mount logs every write and flush it
/// sends to the LUN (`CSVFS_RECORD_LUN_WRITES`) while a workload fsyncs its changes; then, for flush points
/// and random subsets of the writes between two flushes, the image such a cut would leave is built from the
/// LUN as formatted, checked, mounted and checked again: it must pass fsck, mount, and hold every file as
/// the last fsync that returned before the cut left it; and no file, synced or not, may hold bytes it was
/// never given (other than zeros): a commit marking blocks written must never be durable before their data.
///
/// `CSVFS_CRASH_CUTS` sets how many cuts to try (default 200), or `all` (every flush point and three subsets
/// of each stretch between flushes); `CSVFS_CRASH_CUTS_SEED` replays the workload's operations and the
/// choice of cuts (the log itself depends on timing: the mount's once-a-second flush).
extension Mounted {
    @Suite struct CrashCutTests {
        static let defaultCuts = 200

        static let operations = 100

        @Test func everyPowerCutOfTheLUNWriteStreamKeepsEveryFsyncedFile() throws {
            let seed = SeededRandom.seed(from: "CSVFS_CRASH_CUTS_SEED", test: "crash cuts")
            let limit = try Self.cutLimit()
            var random = SeededRandom(seed: seed)
            let started = Date()
            try withVolume(size: "256M", mounted: false) { volume in
                let base = try BaseImage(copying: volume.lun)
                let log = volume.directory.appendingPathComponent("lun-writes.log").path
                try volume.mount(environment: ["CSVFS_RECORD_LUN_WRITES": log])
                let history = try CutWorkload(mountpoint: volume.mountpoint, log: log, seed: random.next(),
                                              operations: Self.operations).run()
                try volume.unmount()
                let cuts = try CrashCuts(try LUNWriteLog.read(path: log))
                // Were a write of the LUN missing from the log, its cut images would be images of nothing.
                let replayed = volume.directory.appendingPathComponent("replayed.img").path
                try base.write(to: replayed, with: cuts.everything, of: cuts)
                let compared = try runProcess("/usr/bin/cmp", [volume.lun, replayed])
                try #require(compared.succeeded, "the formatted LUN with every logged write is the LUN the mount left: \(compared)")
                try FileManager.default.removeItem(atPath: replayed)
                try #require(cuts.flushes.count > Self.operations / 2, "each fsync of the workload flushed the LUN: \(cuts.flushes.count) flushes")
                let chosen = cuts.choose(limit: limit, using: &random)
                var checkedPaths = 0
                var failed = 0
                for (number, cut) in chosen.enumerated() {
                    let name = "\(number + 1) of \(chosen.count), \(cut) (seed \(seed))"
                    let verdict = try Self.check(cut, of: cuts, base: base, history: history, volume: volume)
                    checkedPaths += verdict.checked
                    for failure in verdict.failures { Issue.record("cut \(name): \(failure)") }
                    if !verdict.failures.isEmpty {
                        failed += 1
                        // A few failing cuts tell as much as all of them, in a fraction of the time.
                        if failed == 3 { break }
                    }
                }
                print("crash cuts: tried \(chosen.count) cut points (\(limit.map { "limit \($0)" } ?? "all")) of a log of "
                      + "\(cuts.writeCount) writes and \(cuts.flushes.count) flushes from \(history.operations.count) operations; "
                      + "\(checkedPaths) path checks, \(failed) failing cuts, \(Int(Date().timeIntervalSince(started))) s (seed \(seed))")
                #expect(checkedPaths > chosen.count, "the cuts had fsync'd files to check")
            }
        }

        /// `CSVFS_CRASH_CUTS`: a positive number of cuts, or `all`.
        static func cutLimit() throws -> Int? {
            guard let value = ProcessInfo.processInfo.environment["CSVFS_CRASH_CUTS"], !value.isEmpty else { return defaultCuts }
            if value == "all" { return nil }
            guard let count = Int(value), count > 0 else {
                throw FixtureError("CSVFS_CRASH_CUTS=\(value): expected a positive number of cut points, or all")
            }
            return count
        }

        /// Builds the cut's image on the volume's LUN, then: fsck, mount, every fsync'd file as it must be,
        /// unmount, fsck. Returns how many paths it checked, and what failed.
        static func check(_ cut: CrashCuts.Cut, of cuts: CrashCuts, base: BaseImage, history: FsyncHistory,
                          volume: TestVolume) throws -> FsyncHistory.Verdict {
            try base.write(to: volume.lun, with: cut, of: cuts)
            let first = try volume.fsck()
            guard first.succeeded else { return FsyncHistory.Verdict(failures: ["fsck of the image the cut left: \(first)"]) }
            do {
                try volume.mount()
            } catch {
                return FsyncHistory.Verdict(failures: ["the image the cut left does not mount: \(error)"])
            }
            var verdict = history.verify(at: cut.position, mountpoint: volume.mountpoint)
            try volume.unmount()
            let second = try volume.fsck()
            if !second.succeeded { verdict.failures.append("fsck after mounting the image the cut left: \(second)") }
            return verdict
        }
    }
}
