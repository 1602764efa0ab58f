import CSVFS
@testable import CSVFSCluster
@testable import LockManager
import Testing

/// The races of the file-lock delegation, replayed event by event on the pure table.
@Suite struct FileLockDelegationTableTests {
    static let ex = LockHandle(id: LockID(node: 1, serial: 1), resource: InodeLock.fileLocks.resource(7))
    static let pr = LockHandle(id: LockID(node: 1, serial: 2), resource: InodeLock.fileLocks.resource(7))

    static func lock(_ mode: FileLockMode, _ first: Int64, _ last: Int64, owner: UInt64) -> FileLock {
        FileLock(ino: 7, kind: .record, mode: mode, range: FileLockRange(first: first, last: last),
                 owner: FileLockOwner(node: 1, owner: owner), handle: owner, pid: UInt32(owner))
    }

    /// A table that keeps inode 7's locks, handed `locks` by the coordinator.
    static func delegated(_ locks: [FileLock] = []) -> FileLockDelegationTable {
        var table = FileLockDelegationTable(node: 1)
        #expect(table.begin(7, .lock) == .wait(.requestExclusive(7)))
        #expect(table.exclusiveGranted(7, ex) == .withdraw(7, ex))
        #expect(table.withdrawn(7, ex, locks) == nil)
        return table
    }

    @Test func aNodeAloneOnAnInodeKeepsItsLocksAndAsksNobody() {
        var table = Self.delegated([Self.lock(.shared, 0, 9, owner: 5)])
        #expect(table.begin(7, .lock) == .local)
        #expect(table.local.locks == [Self.lock(.shared, 0, 9, owner: 5)], "what the coordinator handed over")
        #expect(table.begin(7, .release) == .local, "unlocks and closes too")
        #expect(table.begin(7, .look) == .central, "the status reads the coordinator's table, and this node's apart")
        #expect(table.end(7, holdsLocks: false) == nil, "the EX lock stays: it is the delegation")
        #expect(table.begin(7, .lock) == .local)
    }

    @Test func anotherNodesDemandGivesTheLocksBackThenTheDLMLock() {
        var table = Self.delegated()
        _ = table.local.lock(Self.lock(.exclusive, 0, 0, owner: 5), wait: nil)
        #expect(table.blocked(7) == .deposit(7, Self.ex, [Self.lock(.exclusive, 0, 0, owner: 5)], thenShared: false))
        #expect(table.local.locks.isEmpty)
        #expect(table.begin(7, .lock) == .wait(nil), "a call waits while they travel")
        #expect(table.begin(7, .release) == .wait(nil), "a release too: it must reach the table that has them")
        #expect(table.deposited(7) == .unlock(7, Self.ex))
        table.released(7)
        #expect(table.begin(7, .lock) == .wait(.requestExclusive(7)), "then it starts over")
        #expect(table.exclusiveRefused(7) == .requestShared(7), "the other node holds PR: this one joins it")
        #expect(table.sharedGranted(7, Self.pr) == nil)
        #expect(table.begin(7, .lock) == .central)
        #expect(table.end(7, holdsLocks: true) == nil, "PR is kept while this node holds locks there")
        #expect(table.begin(7, .release) == .central)
        #expect(table.end(7, holdsLocks: false) == .unlock(7, Self.pr), "and goes with the last")
        table.released(7)
        #expect(table.entries.isEmpty, "nothing is kept of an inode nobody here locks")
    }

    @Test func aDemandThatArrivesBeforeTheHandOverIsAnsweredRightAfterIt() {
        var table = FileLockDelegationTable(node: 1)
        _ = table.begin(7, .lock)
        _ = table.exclusiveGranted(7, Self.ex)
        #expect(table.blocked(7) == nil, "the locks are not here yet")
        #expect(table.withdrawn(7, Self.ex, [Self.lock(.shared, 1, 1, owner: 5)])
                == .deposit(7, Self.ex, [Self.lock(.shared, 1, 1, owner: 5)], thenShared: false))
    }

    @Test func aCoordinatorThatRefusesLeavesTheNodeUnderPR() {
        var table = FileLockDelegationTable(node: 1)
        _ = table.begin(7, .lock)
        _ = table.exclusiveGranted(7, Self.ex)
        #expect(table.withdrawRefused(7, Self.ex) == .convertToShared(7, Self.ex))
        #expect(table.begin(7, .lock) == .wait(nil))
        #expect(table.sharedGranted(7, Self.ex) == nil)
        #expect(table.begin(7, .lock) == .central)
    }

    @Test func aWithdrawalWithoutAnAnswerGivesBackWhatTheNodeKnowsItHolds() {
        var table = FileLockDelegationTable(node: 1)
        _ = table.begin(7, .lock)
        _ = table.exclusiveGranted(7, Self.ex)
        let held = [Self.lock(.exclusive, 3, 4, owner: 5)]
        #expect(table.withdrawFailed(7, Self.ex, restoring: held) == .deposit(7, Self.ex, held, thenShared: true))
        #expect(table.deposited(7) == .convertToShared(7, Self.ex))
        #expect(table.sharedGranted(7, Self.ex) == nil)
        #expect(table.begin(7, .lock) == .central)
    }

    @Test func aLockThatMustWaitWaitsAtTheCoordinator() {
        var table = Self.delegated([Self.lock(.exclusive, 0, 9, owner: 5)])
        #expect(table.begin(7, .lock) == .local)
        #expect(table.mustWait(7) == .deposit(7, Self.ex, [Self.lock(.exclusive, 0, 9, owner: 5)], thenShared: true))
        #expect(table.blocked(7) == nil, "a demand meanwhile is met by the PR to come")
        #expect(table.deposited(7) == .convertToShared(7, Self.ex))
        #expect(table.sharedGranted(7, Self.ex) == nil)
        #expect(table.begin(7, .lock) == .central)
        #expect(table.end(7, holdsLocks: true) == nil)
    }

    @Test func aReleaseOnItsWayHoldsUpTheHandOver() {
        var table = FileLockDelegationTable(node: 1)
        #expect(table.begin(7, .release) == .central, "no DLM lock for a release: the coordinator has the locks")
        #expect(table.begin(7, .lock) == .wait(nil), "a hand-over now could miss it")
        #expect(table.end(7, holdsLocks: false) == nil)
        #expect(table.begin(7, .lock) == .wait(.requestExclusive(7)))
    }

    @Test func aStatusReadTakesPROnly() {
        var table = FileLockDelegationTable(node: 1)
        #expect(table.begin(7, .look) == .wait(.requestShared(7)))
        #expect(table.sharedGranted(7, Self.pr) == nil)
        #expect(table.begin(7, .look) == .central)
        #expect(table.end(7, holdsLocks: false) == .unlock(7, Self.pr))
    }

    @Test func aFencedNodeLosesWhatItKeptAndWaitingCallsFail() {
        var table = Self.delegated([Self.lock(.shared, 0, 9, owner: 5)])
        let before = table.failures
        table.lost(7)
        #expect(table.local.locks.isEmpty && table.entries.isEmpty)
        #expect(table.failures > before)
        _ = table.begin(7, .lock)
        #expect(table.exclusiveRefused(7) == .requestShared(7))
        #expect(table.failed(7, handle: nil) == nil)
        #expect(table.begin(7, .lock) == .wait(.requestExclusive(7)), "the next call asks again")
    }

    @Test func aNewCoordinatorGetsBackEverythingKept() {
        var table = Self.delegated([Self.lock(.shared, 0, 9, owner: 5)])
        #expect(table.coordinatorChanged() == [.deposit(7, Self.ex, [Self.lock(.shared, 0, 9, owner: 5)], thenShared: false)])
        #expect(table.coordinatorChanged().isEmpty, "once")
    }

    @Test func aStrayGrantIsGivenBack() {
        var table = FileLockDelegationTable(node: 1)
        #expect(table.exclusiveGranted(7, Self.ex) == .unlock(7, Self.ex))
        #expect(table.sharedGranted(7, Self.pr) == .unlock(7, Self.pr))
    }

    @Test func pastTheLimitTheOldestIdleInodeGoesBack() {
        var table = FileLockDelegationTable(node: 1, idleLimit: 2)
        func keep(_ ino: UInt64) {
            let handle = LockHandle(id: LockID(node: 1, serial: ino), resource: InodeLock.fileLocks.resource(ino))
            #expect(table.begin(ino, .lock) == .wait(.requestExclusive(ino)))
            #expect(table.exclusiveGranted(ino, handle) == .withdraw(ino, handle))
            #expect(table.withdrawn(ino, handle, []) == nil)
        }
        keep(1)
        keep(2)
        keep(3)
        _ = table.local.lock(FileLock(ino: 1, kind: .flock, mode: .shared, range: .wholeFile,
                                      owner: FileLockOwner(node: 1, owner: 9), handle: 9, pid: 9), wait: nil)
        #expect(table.localCallDone(1) == nil, "a lock is held on 1: it is not idle")
        #expect(table.localCallDone(2) == nil)
        #expect(table.localCallDone(3) == nil, "two idle: within the limit")
        keep(4)
        let four = LockHandle(id: LockID(node: 1, serial: 2), resource: InodeLock.fileLocks.resource(2))
        #expect(table.localCallDone(4) == .deposit(2, four, [], thenShared: false), "the oldest idle one goes back")
        #expect(table.idleSince.keys.sorted() == [3, 4])
    }
}
