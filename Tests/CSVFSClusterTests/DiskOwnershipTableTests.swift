@testable import CSVFSCluster
@testable import LockManager
import Testing

/// The races of disk ownership, replayed event by event on the pure table.
@Suite struct DiskOwnershipTableTests {
    static let handle = LockHandle(id: LockID(node: 1, serial: 1), resource: InodeLock.disk.resource(7))

    static func held(exclusive: Bool) -> DiskOwnershipTable {
        var table = DiskOwnershipTable()
        #expect(table.want(7, exclusive: exclusive) == .wait(.request(7, exclusive: exclusive)))
        #expect(table.granted(7, handle, exclusive: exclusive) == nil)
        return table
    }

    @Test func aGrantIsKeptUntilAnotherNodeAsks() {
        var table = Self.held(exclusive: true)
        #expect(table.want(7, exclusive: true) == .held(Self.handle), "kept: no second request")
        #expect(table.want(7, exclusive: false) == .held(Self.handle), "exclusive serves reads too")
        #expect(table.holding(7, exclusive: true) == Self.handle)
        #expect(table.blocked(7) == .revoke(7))
        #expect(table.want(7, exclusive: true) == .wait(nil), "while the disk is flushed, calls wait")
        #expect(table.holding(7, exclusive: true) == Self.handle, "still held until the flush is done")
        #expect(table.blocked(7) == nil, "a second callback starts no second flush")
        #expect(table.release(7) == .unlock(7, Self.handle))
        #expect(table.holding(7, exclusive: false) == nil)
        #expect(table.want(7, exclusive: true) == .wait(nil), "no new request before the unlock is done")
        table.released(7)
        #expect(table.want(7, exclusive: true) == .wait(.request(7, exclusive: true)), "then asked again")
    }

    @Test func sharedIsNotTurnedIntoExclusiveInPlace() {
        var table = Self.held(exclusive: false)
        #expect(table.want(7, exclusive: false) == .held(Self.handle))
        #expect(table.want(7, exclusive: true) == .heldShared, "the caller lets go first")
        #expect(table.holding(7, exclusive: true) == nil)
        #expect(table.release(7) == .unlock(7, Self.handle))
        table.released(7)
        #expect(table.want(7, exclusive: true) == .wait(.request(7, exclusive: true)))
    }

    /// The blocking callback can come before the grant is seen: the disk is given back as soon as it is had.
    @Test func aCallbackBeforeTheGrantIsSeenRevokesAtTheGrant() {
        var table = DiskOwnershipTable()
        #expect(table.want(7, exclusive: true) == .wait(.request(7, exclusive: true)))
        #expect(table.want(7, exclusive: false) == .wait(nil), "a second call waits for the same request")
        #expect(table.blocked(7) == nil)
        #expect(table.granted(7, Self.handle, exclusive: true) == .revoke(7))
        #expect(table.want(7, exclusive: true) == .wait(nil))
    }

    @Test func aRefusedRequestWakesTheWaitersWithAFailure() {
        var table = DiskOwnershipTable()
        #expect(table.want(7, exclusive: true) == .wait(.request(7, exclusive: true)))
        let before = table.failures
        table.failed(7)
        #expect(table.failures == before + 1)
        #expect(table.want(7, exclusive: true) == .wait(.request(7, exclusive: true)), "nothing is left behind")
    }

    /// Fenced: the DLM lock went without an unlock, so nothing is held and no unlock is sent.
    @Test func aLostLockLeavesNothingHeld() {
        var table = Self.held(exclusive: true)
        table.lost(7)
        #expect(table.holding(7, exclusive: false) == nil)
        #expect(table.release(7) == nil)
        #expect(table.want(7, exclusive: true) == .wait(.request(7, exclusive: true)))
    }

    @Test func aGrantNobodyWaitsForIsGivenBack() {
        var table = DiskOwnershipTable()
        #expect(table.granted(7, Self.handle, exclusive: true) == .unlock(7, Self.handle))
        #expect(table.disks.isEmpty)
    }

    @Test func disksAreIndependent() {
        var table = Self.held(exclusive: true)
        #expect(table.want(8, exclusive: true) == .wait(.request(8, exclusive: true)))
        #expect(table.blocked(8) == nil)
        #expect(table.want(7, exclusive: true) == .held(Self.handle))
    }
}
