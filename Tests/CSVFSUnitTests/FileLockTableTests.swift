@testable import CSVFS
import TestSupport
import Testing

private let eof = FileLockRange.endOfFile

/// A request of `owner` on `node`; its handle is the owner's number unless told, its pid 100 more.
private func request(_ mode: FileLockMode, _ first: Int64, _ last: Int64, owner: UInt64, node: UInt32 = 1, ino: UInt64 = 7,
                     kind: FileLockKind = .record, handle: UInt64? = nil, pid: UInt32? = nil) -> FileLock {
    FileLock(ino: ino, kind: kind, mode: mode, range: FileLockRange(first: first, last: last),
             owner: FileLockOwner(node: node, owner: owner), handle: handle ?? owner, pid: pid ?? UInt32(100 + owner))
}

/// The table's locks as "inode node:owner kind+mode range", e.g. "7 1:2 rS 0-9" (f for flock, X for exclusive).
private func held(_ table: FileLockTable) -> [String] {
    table.locks.map { "\($0.ino) \($0.owner) \($0.kind == .record ? "r" : "f")\($0.mode == .shared ? "S" : "X") \($0.range)" }
}

private func owner(_ owner: UInt64, node: UInt32 = 1) -> FileLockOwner { FileLockOwner(node: node, owner: owner) }

@Suite struct FileLockTableTests {
    // MARK: Holding

    @Test func sharedLocksCoexist() {
        var table = FileLockTable()
        #expect(table.lock(request(.shared, 0, 9, owner: 1), wait: nil) == .granted)
        #expect(table.lock(request(.shared, 5, 20, owner: 2), wait: nil) == .granted)
        #expect(held(table) == ["7 1:1 rS 0-9", "7 1:2 rS 5-20"])
        #expect(table.conflict(with: request(.shared, 0, 30, owner: 3)) == nil)
    }

    @Test func anExclusiveLockConflictsAndGetlkNamesItsHolder() {
        var table = FileLockTable()
        let holder = request(.exclusive, 10, 19, owner: 1, pid: 4242)
        #expect(table.lock(holder, wait: nil) == .granted)
        let asked = request(.shared, 15, 30, owner: 2)
        #expect(table.lock(asked, wait: nil) == .conflict(holder))
        let found = table.conflict(with: asked)
        #expect(found?.pid == 4242 && found?.range == FileLockRange(first: 10, last: 19) && found?.owner == holder.owner)
        #expect(table.lock(request(.exclusive, 20, 30, owner: 2), wait: nil) == .granted, "past the holder's last byte")
        #expect(table.conflict(with: request(.exclusive, 0, 19, owner: 1)) == nil, "an owner is never in its own way")
        #expect(table.conflict(with: request(.shared, 25, eof, owner: 3))?.owner == owner(2))
        #expect(table.conflict(with: request(.shared, 0, eof, owner: 3))?.owner == owner(1), "the first in the order of locks")
    }

    @Test func anOwnersLocksOfOneModeMergeWhenTheyTouchOrOverlap() {
        var table = FileLockTable()
        _ = table.lock(request(.shared, 0, 9, owner: 1), wait: nil)
        _ = table.lock(request(.shared, 10, 19, owner: 1, handle: 3, pid: 7), wait: nil)
        #expect(held(table) == ["7 1:1 rS 0-19"], "adjacent")
        #expect(table.locks.first?.pid == 7 && table.locks.first?.handle == 3, "the request that last set it")
        _ = table.lock(request(.shared, 15, 30, owner: 1), wait: nil)
        #expect(held(table) == ["7 1:1 rS 0-30"], "overlapping")
        _ = table.lock(request(.exclusive, 40, 50, owner: 1), wait: nil)
        _ = table.lock(request(.shared, 31, 39, owner: 1), wait: nil)
        #expect(held(table) == ["7 1:1 rS 0-39", "7 1:1 rX 40-50"], "another mode never merges")
        _ = table.lock(request(.shared, 0, 60, owner: 1), wait: nil)
        #expect(held(table) == ["7 1:1 rS 0-60"], "a new range replaces whatever the owner held there")
    }

    @Test func unlockingTheMiddleOfALockSplitsIt() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, 99, owner: 1), wait: nil)
        #expect(table.unlock(ino: 7, kind: .record, range: FileLockRange(first: 40, last: 59), owner: owner(1)) == [])
        #expect(held(table) == ["7 1:1 rX 0-39", "7 1:1 rX 60-99"])
        #expect(table.lock(request(.exclusive, 40, 59, owner: 2), wait: nil) == .granted)
        #expect(table.conflict(with: request(.shared, 39, 39, owner: 3))?.range == FileLockRange(first: 0, last: 39))
        _ = table.unlock(ino: 7, kind: .record, range: FileLockRange(first: 200, last: 300), owner: owner(1))
        #expect(held(table) == ["7 1:1 rX 0-39", "7 1:1 rX 60-99", "7 1:2 rX 40-59"], "unlocking bytes not held")
    }

    @Test func anExclusiveLockInTheMiddleOfASharedOneSplitsItInThree() {
        var table = FileLockTable()
        _ = table.lock(request(.shared, 0, 99, owner: 1), wait: nil)
        #expect(table.lock(request(.exclusive, 40, 59, owner: 1), wait: nil) == .granted)
        #expect(held(table) == ["7 1:1 rS 0-39", "7 1:1 rX 40-59", "7 1:1 rS 60-99"])
        #expect(table.conflict(with: request(.shared, 0, 39, owner: 2)) == nil)
        #expect(table.conflict(with: request(.shared, 50, 50, owner: 2))?.mode == .exclusive)
        _ = table.lock(request(.shared, 40, 59, owner: 1), wait: nil)
        #expect(held(table) == ["7 1:1 rS 0-99"], "back to shared, the three join again")
    }

    @Test func rangesToTheEndOfTheFile() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 100, eof, owner: 1), wait: nil)
        #expect(table.conflict(with: request(.shared, eof, eof, owner: 2)) != nil, "the last byte there can be")
        #expect(table.lock(request(.shared, 0, 99, owner: 2), wait: nil) == .granted)
        #expect(table.conflict(with: request(.shared, 0, eof, owner: 3))?.range == FileLockRange(first: 100, last: eof))
        _ = table.unlock(ino: 7, kind: .record, range: FileLockRange(first: 200, last: eof), owner: owner(1))
        #expect(held(table) == ["7 1:1 rX 100-199", "7 1:2 rS 0-99"])
        _ = table.lock(request(.exclusive, 200, eof, owner: 1), wait: nil)
        #expect(held(table) == ["7 1:1 rX 100-EOF", "7 1:2 rS 0-99"])
        _ = table.lock(request(.shared, 150, eof, owner: 1), wait: nil)
        #expect(held(table) == ["7 1:1 rX 100-149", "7 1:1 rS 150-EOF", "7 1:2 rS 0-99"])
    }

    @Test func recordAndFlockLocksAndInodesAreApart() {
        var table = FileLockTable()
        #expect(table.lock(request(.exclusive, 0, eof, owner: 1), wait: nil) == .granted)
        #expect(table.lock(request(.exclusive, 0, eof, owner: 2, kind: .flock), wait: nil) == .granted)
        #expect(table.lock(request(.exclusive, 0, eof, owner: 2, ino: 8), wait: nil) == .granted)
        #expect(table.conflict(with: request(.shared, 0, 0, owner: 2))?.kind == .record)
        #expect(table.conflict(with: request(.shared, 0, 0, owner: 1, kind: .flock))?.kind == .flock)
        _ = table.unlock(ino: 7, kind: .flock, range: .wholeFile, owner: owner(1))
        _ = table.unlock(ino: 7, kind: .flock, range: .wholeFile, owner: owner(2))
        #expect(held(table) == ["7 1:1 rX 0-EOF", "8 1:2 rX 0-EOF"], "a flock unlock leaves record locks be")
    }

    @Test func aFailedRequestChangesNothing() {
        var table = FileLockTable()
        _ = table.lock(request(.shared, 0, 99, owner: 1), wait: nil)
        _ = table.lock(request(.shared, 50, 50, owner: 2), wait: nil)
        _ = table.lock(request(.exclusive, 200, 200, owner: 2), wait: nil)
        let before = table.locks
        #expect(table.lock(request(.exclusive, 0, 99, owner: 1), wait: nil) == .conflict(request(.shared, 50, 50, owner: 2)))
        #expect(table.locks == before && table.waiting.isEmpty)
        #expect(table.lock(request(.exclusive, 200, 200, owner: 1), wait: 1) == .queued)
        #expect(table.lock(request(.exclusive, 0, 300, owner: 2), wait: 2) == .deadlock)
        #expect(table.locks == before, "neither the queued nor the refused request touched the owners' locks")
        #expect(table.waiting.map(\.wait) == [1])
    }

    // MARK: Deadlocks

    @Test func twoOwnersWaitingOnEachOtherIsADeadlock() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, 0, owner: 1), wait: nil)
        _ = table.lock(request(.exclusive, 1, 1, owner: 2), wait: nil)
        #expect(table.lock(request(.exclusive, 1, 1, owner: 1), wait: 10) == .queued)
        #expect(table.lock(request(.exclusive, 0, 0, owner: 2), wait: 11) == .deadlock)
        #expect(table.waiting.map(\.wait) == [10])
        let grants = table.unlock(ino: 7, kind: .record, range: FileLockRange(first: 1, last: 1), owner: owner(2))
        #expect(grants == [FileLockGrant(wait: 10, lock: request(.exclusive, 1, 1, owner: 1))])
    }

    @Test func aCycleOfThreeOwnersIsADeadlock() {
        var table = FileLockTable()
        for owner in UInt64(1)...3 { _ = table.lock(request(.exclusive, Int64(owner), Int64(owner), owner: owner), wait: nil) }
        #expect(table.lock(request(.exclusive, 2, 2, owner: 1), wait: 10) == .queued)
        #expect(table.lock(request(.exclusive, 3, 3, owner: 2), wait: 11) == .queued)
        #expect(table.lock(request(.exclusive, 1, 1, owner: 3), wait: 12) == .deadlock)
        #expect(table.lock(request(.exclusive, 1, 1, owner: 3), wait: nil) == .conflict(request(.exclusive, 1, 1, owner: 1)))
        #expect(table.waiting.map(\.wait) == [10, 11])
    }

    @Test func twoSharedHoldersBothUpgradingIsADeadlock() {
        var table = FileLockTable()
        _ = table.lock(request(.shared, 0, 9, owner: 1), wait: nil)
        _ = table.lock(request(.shared, 0, 9, owner: 2), wait: nil)
        #expect(table.lock(request(.exclusive, 0, 9, owner: 1), wait: 10) == .queued)
        #expect(held(table) == ["7 1:1 rS 0-9", "7 1:2 rS 0-9"], "the waiting upgrader keeps its shared lock")
        #expect(table.lock(request(.exclusive, 0, 9, owner: 2), wait: 11) == .deadlock)
        let grants = table.unlock(ino: 7, kind: .record, range: FileLockRange(first: 0, last: 9), owner: owner(2))
        #expect(grants.map(\.wait) == [10])
        #expect(held(table) == ["7 1:1 rX 0-9"])
    }

    @Test func aChainThatEndsElsewhereIsNoDeadlock() {
        var table = FileLockTable()
        for owner in UInt64(1)...3 { _ = table.lock(request(.exclusive, Int64(owner), Int64(owner), owner: owner), wait: nil) }
        #expect(table.lock(request(.exclusive, 3, 3, owner: 2), wait: 10) == .queued, "2 waits for 3")
        #expect(table.lock(request(.exclusive, 2, 2, owner: 1), wait: 11) == .queued, "1 waits for 2, who waits for 3")
        #expect(table.lock(request(.exclusive, 1, 1, owner: 4), wait: 12) == .queued, "4 waits for 1, 2 and 3")
        #expect(table.lock(request(.exclusive, 0, 0, owner: 3), wait: 13) == .granted, "byte 0 is no one's")
        #expect(table.lock(request(.exclusive, 1, 1, owner: 3), wait: 14) == .deadlock, "3 waiting for 1 closes the loop")
        #expect(table.waiting.map(\.wait) == [10, 11, 12])
    }

    @Test func flockLocksAreNeverRefusedAsDeadlock() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, eof, owner: 1, ino: 7, kind: .flock), wait: nil)
        _ = table.lock(request(.exclusive, 0, eof, owner: 2, ino: 8, kind: .flock), wait: nil)
        #expect(table.lock(request(.exclusive, 0, eof, owner: 1, ino: 8, kind: .flock), wait: 10) == .queued)
        #expect(table.lock(request(.exclusive, 0, eof, owner: 2, ino: 7, kind: .flock), wait: 11) == .queued)
        #expect(table.waiting.map(\.wait) == [10, 11])
    }

    // MARK: Waiting

    @Test func freedBytesGrantWaitsOldestFirstEachBeforeTheNext() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, 99, owner: 1), wait: nil)
        _ = table.lock(request(.exclusive, 0, 9, owner: 2), wait: 10)
        _ = table.lock(request(.shared, 5, 5, owner: 3), wait: 11)
        _ = table.lock(request(.shared, 50, 50, owner: 4), wait: 12)
        let upper = table.unlock(ino: 7, kind: .record, range: FileLockRange(first: 50, last: 99), owner: owner(1))
        #expect(upper == [FileLockGrant(wait: 12, lock: request(.shared, 50, 50, owner: 4))])
        let lower = table.unlock(ino: 7, kind: .record, range: FileLockRange(first: 0, last: 49), owner: owner(1))
        #expect(lower.map(\.wait) == [10], "3's wait now finds 2's granted lock in its way")
        #expect(table.waiting.map(\.wait) == [11])
        #expect(held(table) == ["7 1:2 rX 0-9", "7 1:4 rS 50-50"])
        let last = table.unlock(ino: 7, kind: .record, range: .wholeFile, owner: owner(2))
        #expect(last.map(\.wait) == [11] && table.waiting.isEmpty)
    }

    @Test func aGrantThatFreesBytesGrantsTheWaitsItUnblocks() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, 9, owner: 1), wait: nil)
        _ = table.lock(request(.exclusive, 20, 29, owner: 2), wait: nil)
        _ = table.lock(request(.shared, 5, 5, owner: 3), wait: 10)
        _ = table.lock(request(.shared, 0, 29, owner: 1), wait: 11)
        let grants = table.unlock(ino: 7, kind: .record, range: .wholeFile, owner: owner(2))
        #expect(grants.map(\.wait) == [11, 10], "1's shared lock replaced its exclusive one, which held up 3")
        #expect(held(table) == ["7 1:1 rS 0-29", "7 1:3 rS 5-5"])
    }

    @Test func aCancelledWaitIsNeverGranted() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, 9, owner: 1), wait: nil)
        _ = table.lock(request(.exclusive, 0, 9, owner: 2), wait: 10)
        _ = table.lock(request(.exclusive, 0, 9, owner: 3), wait: 11)
        let cancelled = [table.cancel(wait: 10), table.cancel(wait: 10), table.cancel(wait: 99)]
        #expect(cancelled == [true, false, false], "only a queued wait can be cancelled, once")
        #expect(table.waiting.map(\.wait) == [11])
        let grants = table.unlock(ino: 7, kind: .record, range: .wholeFile, owner: owner(1))
        #expect(grants.map(\.wait) == [11])
        #expect(held(table) == ["7 1:3 rX 0-9"])
    }

    // MARK: Releasing

    @Test func aProcesssCloseDropsOnlyItsRecordLocksOnThatFile() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, 9, owner: 1), wait: nil)
        _ = table.lock(request(.exclusive, 20, 29, owner: 1), wait: nil)
        _ = table.lock(request(.exclusive, 0, eof, owner: 1, kind: .flock), wait: nil)
        _ = table.lock(request(.exclusive, 0, 9, owner: 1, ino: 8), wait: nil)
        _ = table.lock(request(.shared, 40, 49, owner: 2), wait: nil)
        #expect(table.lock(request(.exclusive, 0, 29, owner: 3), wait: 10) == .queued)
        #expect(table.lock(request(.shared, 0, eof, owner: 4, kind: .flock), wait: 11) == .queued)
        let grants = table.releaseRecordLocks(ino: 7, owner: owner(1))
        #expect(grants == [FileLockGrant(wait: 10, lock: request(.exclusive, 0, 29, owner: 3))])
        #expect(held(table) == ["7 1:1 fX 0-EOF", "7 1:2 rS 40-49", "7 1:3 rX 0-29", "8 1:1 rX 0-9"])
        #expect(table.waiting.map(\.wait) == [11])
        #expect(table.releaseRecordLocks(ino: 7, owner: owner(1)) == [])
    }

    @Test func theLastCloseOfAHandleDropsWhatWasTakenThroughItOnItsNode() {
        var table = FileLockTable()
        // Node 1's open file 5, owner 1: an OFD lock and a flock lock.
        _ = table.lock(request(.exclusive, 0, 9, owner: 1, handle: 5), wait: nil)
        _ = table.lock(request(.exclusive, 0, eof, owner: 1, kind: .flock, handle: 5), wait: nil)
        // Another open file of node 1, and node 2's own open file 5 with the same owner number.
        _ = table.lock(request(.shared, 20, 29, owner: 3, handle: 6), wait: nil)
        _ = table.lock(request(.shared, 40, 49, owner: 1, node: 2, handle: 5), wait: nil)
        #expect(table.lock(request(.exclusive, 20, 20, owner: 4, handle: 5), wait: 10) == .queued)
        #expect(table.lock(request(.exclusive, 0, eof, owner: 1, node: 2, kind: .flock, handle: 5), wait: 11) == .queued)
        #expect(table.lock(request(.exclusive, 0, 0, owner: 3, handle: 6), wait: 12) == .queued)
        let grants = table.release(handle: 5, node: 1)
        #expect(grants.map(\.wait) == [11, 12], "wait 10 was made through the closed handle")
        #expect(table.waiting.isEmpty)
        #expect(held(table) == ["7 1:3 rX 0-0", "7 1:3 rS 20-29", "7 2:1 rS 40-49", "7 2:1 fX 0-EOF"])
        #expect(table.release(handle: 5, node: 1) == [])
        #expect(held(table).count == 4)
        _ = table.release(handle: 5, node: 2)
        #expect(held(table) == ["7 1:3 rX 0-0", "7 1:3 rS 20-29"])
    }

    @Test func aNodesDepartureDropsItsLocksAndWaitsAndGrantsOthers() {
        var table = FileLockTable()
        _ = table.lock(request(.exclusive, 0, 9, owner: 1, ino: 7), wait: nil)
        _ = table.lock(request(.exclusive, 0, eof, owner: 1, ino: 8), wait: nil)
        _ = table.lock(request(.exclusive, 0, eof, owner: 1, node: 2, ino: 9), wait: nil)
        #expect(table.lock(request(.exclusive, 0, 9, owner: 1, node: 2, ino: 7), wait: 11) == .queued)
        #expect(table.lock(request(.shared, 0, 0, owner: 2, ino: 9), wait: 10) == .queued)
        #expect(table.lock(request(.shared, 0, 0, owner: 1, node: 3, ino: 8), wait: 12) == .queued)
        let grants = table.release(node: 1)
        #expect(grants.map(\.wait) == [11, 12])
        #expect(table.waiting.isEmpty, "node 1's own wait went with it")
        #expect(held(table) == ["7 2:1 rX 0-9", "8 3:1 rS 0-0", "9 2:1 rX 0-EOF"])
        #expect(table.release(handle: 1, node: 1) == [] && held(table).count == 3)
    }

    // MARK: Against a model

    /// Random locks and unlocks of three owners on one inode, after each checked against the simplest model
    /// there is: for each byte, which owners hold it and how.
    @Test func randomLocksAndUnlocksMatchAPerByteModel() {
        let base = SeededRandom.seed(from: "CSVFS_FILE_LOCK_SEED", test: "randomLocksAndUnlocksMatchAPerByteModel")
        for run in UInt64(0)..<50 {
            guard checkAgainstModel(seed: base &+ run, waiting: false) else { return }
        }
    }

    /// The same with waits, cancels and process closes: what each call grants, refuses as deadlock and leaves
    /// queued is what the per-byte model says.
    @Test func randomWaitsMatchAPerByteModel() {
        let base = SeededRandom.seed(from: "CSVFS_FILE_LOCK_SEED", test: "randomWaitsMatchAPerByteModel")
        for run in UInt64(0)..<50 {
            guard checkAgainstModel(seed: base &+ run, waiting: true) else { return }
        }
    }

    /// Runs one seeded sequence; false after the first step where the table and the model part.
    private func checkAgainstModel(seed: UInt64, waiting: Bool) -> Bool {
        var random = SeededRandom(seed: seed)
        var table = FileLockTable()
        var model = ByteModel()
        var nextWait: UInt64 = 1
        for step in 0..<300 {
            let context = "seed \(seed) step \(step)"
            let who = UInt64.random(in: 1...3, using: &random)
            let first = Int64.random(in: 0..<64, using: &random)
            let last = Int.random(in: 0..<6, using: &random) == 0 ? eof : Int64.random(in: first..<64, using: &random)
            var expectedGrants: [UInt64] = []
            var grants: [FileLockGrant] = []
            switch Int.random(in: 0..<20, using: &random) {
            case 0:
                grants = table.releaseRecordLocks(ino: 7, owner: owner(who))
                model.unlock(0, eof, owner: who)
                expectedGrants = model.grant()
            case 1 where waiting && !model.queue.isEmpty:
                let wait = model.queue[Int.random(in: 0..<model.queue.count, using: &random)].wait
                let cancelled = table.cancel(wait: wait)
                #expect(cancelled, "\(context)")
                model.queue.removeAll { $0.wait == wait }
            case 1...10:
                let mode: FileLockMode = Bool.random(using: &random) ? .shared : .exclusive
                let asked = request(mode, first, last, owner: who, pid: UInt32(step))
                let wait: UInt64? = waiting && Bool.random(using: &random) ? nextWait : nil
                nextWait += 1
                let decision = table.lock(asked, wait: wait)
                if model.blockers(of: asked).isEmpty {
                    #expect(decision == .granted, "\(context)")
                    model.set(asked)
                } else if let wait {
                    let deadlock = model.closesCycle(asked)
                    #expect(decision == (deadlock ? .deadlock : .queued), "\(context): \(asked.range) of \(who)")
                    if !deadlock { model.queue.append((wait, asked)) }
                } else if case .conflict(let holder) = decision {
                    #expect(holder.conflicts(with: asked) && table.locks.contains(holder), "\(context)")
                } else {
                    Issue.record("\(context): \(asked.range) of \(who) should conflict, got \(decision)")
                    return false
                }
            default:
                grants = table.unlock(ino: 7, kind: .record, range: FileLockRange(first: first, last: last), owner: owner(who))
                model.unlock(first, last, owner: who)
                expectedGrants = model.grant()
            }

            var problems: [String] = []
            if grants.map(\.wait) != expectedGrants { problems.append("granted \(grants.map(\.wait)), not \(expectedGrants)") }
            if table.waiting.map(\.wait) != model.queue.map(\.wait) {
                problems.append("waiting \(table.waiting.map(\.wait)), not \(model.queue.map(\.wait))")
            }
            var seen = ByteModel()
            var previous: FileLock?
            for lock in table.locks {
                if let previous, previous.owner == lock.owner {
                    if previous.range.last >= lock.range.first { problems.append("\(previous.range) and \(lock.range) overlap") }
                    if previous.mode == lock.mode && previous.range.last + 1 == lock.range.first {
                        problems.append("\(previous.range) and \(lock.range) should be one")
                    }
                }
                seen.set(lock)
                previous = lock
            }
            if seen.bytes != model.bytes { problems.append("the table's bytes are not the model's") }
            #expect(problems.isEmpty, "\(context): \(problems)")
            if !problems.isEmpty { return false }
        }
        return true
    }
}

/// Who holds each byte of inode 7, and how: bytes 0 to 63, and 64 standing for 64 to EOF (no range the model
/// test makes ends in between). Its rules are the table's, byte by byte.
private struct ByteModel {
    var bytes = Array(repeating: [UInt64: FileLockMode](), count: 65)
    var queue: [(wait: UInt64, request: FileLock)] = []

    private func indices(_ first: Int64, _ last: Int64) -> ClosedRange<Int> { Int(first)...Int(min(last, 64)) }

    mutating func set(_ lock: FileLock) {
        for byte in indices(lock.range.first, lock.range.last) { bytes[byte][lock.owner.owner] = lock.mode }
    }

    mutating func unlock(_ first: Int64, _ last: Int64, owner: UInt64) {
        for byte in indices(first, last) { bytes[byte][owner] = nil }
    }

    func blockers(of request: FileLock) -> Set<UInt64> {
        var owners: Set<UInt64> = []
        for byte in indices(request.range.first, request.range.last) {
            for (holder, mode) in bytes[byte] where holder != request.owner.owner
                && (mode == .exclusive || request.mode == .exclusive) { owners.insert(holder) }
        }
        return owners
    }

    func closesCycle(_ request: FileLock) -> Bool {
        var seen: Set<UInt64> = []
        var next = Array(blockers(of: request))
        while let owner = next.popLast() {
            if owner == request.owner.owner { return true }
            guard seen.insert(owner).inserted else { continue }
            for queued in queue where queued.request.owner.owner == owner { next += blockers(of: queued.request) }
        }
        return false
    }

    /// Grants what no longer conflicts, oldest first, until a pass grants nothing; the waits it granted.
    mutating func grant() -> [UInt64] {
        var granted: [UInt64] = []
        var progress = true
        while progress {
            progress = false
            for queued in queue where blockers(of: queued.request).isEmpty {
                set(queued.request)
                queue.removeAll { $0.wait == queued.wait }
                granted.append(queued.wait)
                progress = true
            }
        }
        return granted
    }
}
