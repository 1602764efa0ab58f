@testable import CSVFS
import Dispatch
import Foundation
import Testing

/// The coordinator's lock shell: callers that wait, interrupts, the end of a coordinator, recovery.
struct FileLocksTests {
    static func lock(_ mode: FileLockMode, _ first: Int64, _ last: Int64, node: UInt32 = 1, owner: UInt64) -> FileLock {
        FileLock(ino: 7, kind: .record, mode: mode, range: FileLockRange(first: first, last: last),
                 owner: FileLockOwner(node: node, owner: owner), handle: owner, pid: UInt32(owner))
    }

    /// Runs `body` on a thread of its own; its outcome, once it has one.
    final class Background<T: Sendable>: @unchecked Sendable {
        // @unchecked: `outcome` is reached only under `lock`.
        private let lock = NSLock()
        private var outcome: Result<T, Errno>?
        init(_ body: @escaping @Sendable () throws(Errno) -> T) {
            Thread.detachNewThread { [self] in
                let result = Result { () throws(Errno) -> T in try body() }
                lock.withLock { outcome = result }
            }
        }
        func result(within seconds: Double) -> Result<T, Errno>? {
            let deadline = Date().addingTimeInterval(seconds)
            repeat {
                if let outcome = lock.withLock({ outcome }) { return outcome }
                usleep(5_000)
            } while Date() < deadline
            return lock.withLock { outcome }
        }
    }

    @Test func aWaitIsGrantedWhenTheHolderUnlocks() throws {
        let locks = FileLocks()
        #expect(try locks.lock(Self.lock(.exclusive, 0, 9, owner: 1), wait: nil))
        let waiter = Background { () throws(Errno) in try locks.lock(Self.lock(.exclusive, 5, 5, node: 2, owner: 2), wait: 42) }
        #expect(waiter.result(within: 0.2) == nil, "granted while held")
        locks.unlock(7, kind: .record, range: FileLockRange(first: 0, last: 9), owner: FileLockOwner(node: 1, owner: 1))
        #expect(waiter.result(within: 5) == .success(true))
        #expect(locks.locks.map(\.owner.owner) == [2])
    }

    @Test func aWaitCancelledBeforeItArrivesEndsAtOnce() throws {
        let locks = FileLocks()
        #expect(try locks.lock(Self.lock(.exclusive, 0, 9, owner: 1), wait: nil))
        locks.cancel(wait: 42)
        #expect(throws: Errno.interrupted) { try locks.lock(Self.lock(.exclusive, 0, 0, node: 2, owner: 2), wait: 42) }
        let waiter = Background { () throws(Errno) in try locks.lock(Self.lock(.exclusive, 0, 0, node: 2, owner: 2), wait: 43) }
        #expect(waiter.result(within: 0.2) == nil)
        locks.cancel(wait: 43)
        #expect(waiter.result(within: 5) == .failure(.interrupted))
        locks.unlock(7, kind: .record, range: .wholeFile, owner: FileLockOwner(node: 1, owner: 1))
        #expect(locks.locks.isEmpty, "the interrupted wait was never granted")
    }

    @Test func aWaitPastItsPatienceAsksAgainAndIsNoLongerQueued() throws {
        let locks = FileLocks(patience: .milliseconds(100))
        #expect(try locks.lock(Self.lock(.exclusive, 0, 9, owner: 1), wait: nil))
        #expect(try locks.lock(Self.lock(.exclusive, 0, 0, node: 2, owner: 2), wait: 42) == false, "still waiting")
        locks.unlock(7, kind: .record, range: .wholeFile, owner: FileLockOwner(node: 1, owner: 1))
        #expect(locks.locks.isEmpty, "a wait nobody listens to is never granted")
    }

    @Test func theEndOfTheCoordinatorWakesEveryWaitToAskAgain() throws {
        let locks = FileLocks()
        #expect(try locks.lock(Self.lock(.exclusive, 0, 9, owner: 1), wait: nil))
        let waiter = Background { () throws(Errno) in try locks.lock(Self.lock(.exclusive, 0, 0, node: 2, owner: 2), wait: 42) }
        #expect(waiter.result(within: 0.2) == nil)
        locks.stopWaits()
        #expect(waiter.result(within: 5) == .success(false))
    }

    @Test func aNodeGetsOnlySoManyWaitsAndNoWaitIdTwice() throws {
        let locks = FileLocks(waitsPerNode: 1)
        #expect(try locks.lock(Self.lock(.exclusive, 0, 9, owner: 1), wait: nil))
        let waiter = Background { () throws(Errno) in try locks.lock(Self.lock(.exclusive, 0, 0, node: 2, owner: 2), wait: 42) }
        #expect(waiter.result(within: 0.2) == nil)
        #expect(throws: Errno.invalid) { try locks.lock(Self.lock(.exclusive, 1, 1, node: 3, owner: 3), wait: 42) }
        #expect(throws: Errno.noLocks) { try locks.lock(Self.lock(.exclusive, 1, 1, node: 2, owner: 4), wait: 43) }
        locks.stopWaits()
        #expect(waiter.result(within: 5) == .success(false))
    }

    @Test func aNewCoordinatorGrantsNothingBeforeTheNodesReclaim() throws {
        let locks = FileLocks()
        locks.beginRecovery(awaiting: [2], limit: .seconds(30))
        let asker = Background { () throws(Errno) in try locks.lock(Self.lock(.exclusive, 0, 0, node: 3, owner: 3), wait: nil) }
        #expect(asker.result(within: 0.3) == nil, "answered before node 2 reclaimed")
        locks.reclaim([Self.lock(.shared, 0, 99, node: 2, owner: 2)], node: 2)
        #expect(asker.result(within: 5) == .failure(.wouldBlock), "node 2's reclaimed lock is in the way")
        #expect(!locks.recovering)
    }

    @Test func recoveryEndsWhenTheAwaitedNodeLeavesOrAtItsLimit() throws {
        let leaving = FileLocks()
        leaving.beginRecovery(awaiting: [2], limit: .seconds(30))
        #expect(leaving.recovering)
        leaving.membersChanged([1, 3])
        #expect(!leaving.recovering, "a node that left is not awaited")
        let limited = FileLocks()
        limited.beginRecovery(awaiting: [2], limit: .milliseconds(200))
        #expect(try limited.lock(Self.lock(.exclusive, 0, 0, node: 3, owner: 3), wait: nil), "granted once the limit passed")
    }

    @Test func aNodeThatLeavesLosesItsLocksAndTheirWaitsGoOn() throws {
        let locks = FileLocks()
        locks.membersChanged([1, 2])
        #expect(try locks.lock(Self.lock(.exclusive, 0, 9, node: 1, owner: 1), wait: nil))
        let waiter = Background { () throws(Errno) in try locks.lock(Self.lock(.exclusive, 0, 0, node: 2, owner: 2), wait: 42) }
        #expect(waiter.result(within: 0.2) == nil)
        locks.membersChanged([2])
        #expect(waiter.result(within: 5) == .success(true), "node 1's lock went with it")
    }

    @Test func aNodeKeepsAnInodesLocksOnlyIfNoOtherNodeHoldsOrWaits() throws {
        let locks = FileLocks()
        #expect(try locks.lock(Self.lock(.shared, 0, 9, node: 1, owner: 1), wait: nil))
        #expect(throws: Errno.wouldBlock, "node 1 holds a lock there") { try locks.withdraw(7, node: 2) }
        let handed = try locks.withdraw(7, node: 1)
        #expect(handed == [Self.lock(.shared, 0, 9, owner: 1)])
        #expect(locks.locks.isEmpty, "they left the table")
        #expect(locks.delegations == [DelegatedInode(ino: 7, node: 1)])
        #expect(try locks.withdraw(7, node: 1) == handed, "asked again (its answer lost), it answers the same locks")

        locks.deposit(7, [Self.lock(.exclusive, 20, 29, owner: 1)], node: 1)
        #expect(locks.locks == [Self.lock(.exclusive, 20, 29, owner: 1)], "what the node held when it gave them back")
        #expect(locks.delegations.isEmpty)
        #expect(throws: Errno.wouldBlock) { try locks.lock(Self.lock(.shared, 25, 25, node: 2, owner: 2), wait: nil) }

        let waiter = Background { () throws(Errno) in try locks.lock(Self.lock(.shared, 25, 25, node: 2, owner: 2), wait: 9) }
        #expect(waiter.result(within: 0.2) == nil)
        #expect(throws: Errno.wouldBlock, "a wait is granted only at the coordinator") { try locks.withdraw(7, node: 1) }
        locks.deposit(7, [], node: 1)
        #expect(waiter.result(within: 5) == .success(true), "the deposit that freed the bytes grants the wait")
    }

    @Test func aDepositReplacesWhatAReclaimSetAndANodeThatLeavesKeepsNothing() throws {
        let locks = FileLocks()
        locks.membersChanged([1, 2])
        _ = try locks.withdraw(7, node: 1)
        locks.reclaim([Self.lock(.exclusive, 0, 9, owner: 1)], node: 1)
        locks.deposit(7, [Self.lock(.shared, 0, 4, owner: 1)], node: 1)
        #expect(locks.locks == [Self.lock(.shared, 0, 4, owner: 1)])
        #expect(try locks.withdraw(7, node: 1) == [Self.lock(.shared, 0, 4, owner: 1)])
        locks.membersChanged([2])
        #expect(locks.delegations.isEmpty, "node 1 left")
    }
}
