@testable import CSVFSCluster
@testable import LockManager
import Testing

/// The races of the inode licences, replayed event by event on the pure table.
@Suite struct InodeLicenceTableTests {
    static func handle(_ ino: UInt64, _ serial: UInt64 = 1) -> LockHandle {
        LockHandle(id: LockID(node: 1, serial: serial), resource: InodeLock.metadata.resource(ino))
    }

    @Test func whatWasReadBeforeTheGrantIsNotCached() {
        var table = InodeLicenceTable()
        #expect(table.want(7) == .request(7, .pr))
        #expect(table.want(7) == nil, "asked once")
        let beforeGrant = table.events
        #expect(table.granted(7, handle: Self.handle(7), mode: .pr) == nil)
        #expect(!table.isLicensed(7, since: beforeGrant), "another node may have changed it before the grant")
        #expect(table.isLicensed(7, since: table.events))
    }

    @Test func aChangeOnAReadLicenceConvertsAndCachesNothingMeanwhile() {
        var table = InodeLicenceTable()
        _ = table.want(7)
        _ = table.granted(7, handle: Self.handle(7), mode: .pr)
        let read = table.events
        #expect(table.startChange(7) == .wait(.convert(7, Self.handle(7))))
        #expect(!table.isLicensed(7, since: read), "converting: a CONVDEADLK demotion may let another node in")
        #expect(table.startChange(7) == .wait(nil))
        #expect(table.granted(7, handle: Self.handle(7), mode: .ex) == nil)
        #expect(table.startChange(7) == .proceed)
        let during = table.events
        #expect(!table.isLicensed(7, since: during), "a change in progress")
        #expect(table.finishChange(7) == nil)
        #expect(!table.isLicensed(7, since: during), "read while this node changed it")
        #expect(table.isLicensed(7, since: table.events))
        #expect(table.startChange(7) == .proceed, "EX is kept: the next change costs nothing")
    }

    @Test func anotherNodesRequestWaitsForTheChangeInProgress() {
        var table = InodeLicenceTable()
        #expect(table.startChange(3) == .wait(.request(3, .ex)))
        _ = table.granted(3, handle: Self.handle(3), mode: .ex)
        #expect(table.startChange(3) == .proceed)
        #expect(table.blocked(3) == nil, "not while the change holds it")
        #expect(table.finishChange(3) == .release(3, Self.handle(3), invalidate: true))
        #expect(table.startChange(3) == .wait(nil), "a new change waits for the release to finish")
        table.released(3)
        #expect(table.entries[3] == nil)
        #expect(table.startChange(3) == .wait(.request(3, .ex)))
    }

    @Test func aCallbackBeforeTheGrantOfAChangesLockLetsTheChangeRunFirst() {
        var table = InodeLicenceTable()
        #expect(table.startChange(4) == .wait(.request(4, .ex)))
        #expect(table.blocked(4) == nil)
        #expect(table.granted(4, handle: Self.handle(4), mode: .ex) == nil, "kept for the waiting change")
        #expect(table.startChange(4) == .proceed)
        #expect(table.finishChange(4) == .release(4, Self.handle(4), invalidate: true))
    }

    @Test func aChangeThatGaveUpReleasesALockWantedElsewhere() {
        var table = InodeLicenceTable()
        _ = table.startChange(4)
        _ = table.blocked(4)
        _ = table.granted(4, handle: Self.handle(4), mode: .ex)
        #expect(table.abandonedChange(4) == .release(4, Self.handle(4), invalidate: true))
    }

    @Test func aReadLicenceWantedElsewhereBeforeItsGrantIsGivenBackAtOnce() {
        var table = InodeLicenceTable()
        _ = table.want(5)
        _ = table.blocked(5)
        #expect(table.granted(5, handle: Self.handle(5), mode: .pr) == .release(5, Self.handle(5), invalidate: true))
        #expect(!table.isLicensed(5, since: table.events))
    }

    @Test func aForgottenInodeGivesItsLockUpWithoutInvalidating() {
        var table = InodeLicenceTable()
        _ = table.want(6)
        #expect(table.forgotten(6) == nil, "not granted yet")
        #expect(table.granted(6, handle: Self.handle(6), mode: .pr) == .release(6, Self.handle(6), invalidate: false))
        var again = InodeLicenceTable()
        _ = again.want(6)
        _ = again.forgotten(6)
        _ = again.want(6)
        #expect(again.granted(6, handle: Self.handle(6), mode: .pr) == nil, "looked up again before the grant: kept")
    }

    @Test func aFailedConversionGivesTheLockUp() {
        var table = InodeLicenceTable()
        _ = table.want(8)
        _ = table.granted(8, handle: Self.handle(8), mode: .pr)
        _ = table.startChange(8)
        #expect(table.failed(8) == .release(8, Self.handle(8), invalidate: true))
        #expect(table.startChange(8) == .wait(nil), "until the unlock is done")
        var request = InodeLicenceTable()
        _ = request.want(9)
        #expect(request.failed(9) == nil)
        #expect(request.entries[9] == nil, "a refused request leaves nothing")
    }

    @Test func inodeLockNamesRoundTrip() {
        for lock in InodeLock.allCases {
            #expect(InodeLock.parse(lock.resource(123)).map { [$0.0 == lock, $0.1 == 123] } == [true, true])
        }
        #expect(InodeLock.parse("x123") == nil)
        #expect(InodeLock.parse("i") == nil)
        #expect(InodeLock.parse("p-1") == nil)
    }
}

extension InodeLicenceTableTests {
    /// Telling the coordinator about overwrites in place joins the EX hold they were made under, and never
    /// asks for a lock: without EX there is nothing to tell.
    @Test func onlyAHeldExclusiveLockIsJoined() {
        var table = InodeLicenceTable()
        #expect(table.joinChange(7) == false, "no lock")
        _ = table.want(7)
        #expect(table.joinChange(7) == false, "still requesting")
        _ = table.granted(7, handle: Self.handle(7), mode: .pr)
        #expect(table.joinChange(7) == false, "PR: a change would have to convert")
        #expect(table.entries[7]?.state == .held(.pr, grantedAt: 1), "and nothing was converted")
        var exclusive = InodeLicenceTable()
        _ = exclusive.startChange(8)
        _ = exclusive.granted(8, handle: Self.handle(8), mode: .ex)
        #expect(exclusive.finishChange(8) == nil, "not started: nothing to finish")
        #expect(exclusive.joinChange(8) == true)
        #expect(exclusive.blocked(8) == nil, "the telling holds the lock like any change")
        #expect(exclusive.finishChange(8) == .release(8, Self.handle(8), invalidate: true))
        #expect(exclusive.joinChange(8) == false, "releasing")
    }
}
