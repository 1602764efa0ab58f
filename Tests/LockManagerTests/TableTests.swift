import Testing
@testable import LockManager

/// Directed tests of the lock table: one rule each.
@Suite struct TableTests {
    let a = LockOwner(node: 1, process: 1)
    let b = LockOwner(node: 2, process: 1)
    let c = LockOwner(node: 3, process: 1)
    func id(_ n: UInt32, _ s: UInt64) -> LockID { LockID(node: n, serial: s) }

    @Test func compatibilityMatrixIsTheStandardOne() {
        let expected = ["NL": "yyyyyy", "CR": "yyyyyn", "CW": "yyynnn", "PR": "yynynn", "PW": "yynnnn", "EX": "ynnnnn"]
        for g in LockMode.allCases {
            let row = String(LockMode.allCases.map { g.isCompatible(with: $0) ? "y" : "n" })
            #expect(row == expected[g.description], "row \(g)")
        }
    }

    @Test func exclusiveWaitsAndIsGrantedOnRelease() {
        var t = LockTable(epoch: 1)
        #expect(t.request(id(1, 1), owner: a, resource: "r", mode: .ex, epoch: 1, now: 0).first.map(isGrant) == true)
        let d = t.request(id(2, 1), owner: b, resource: "r", mode: .pr, epoch: 1, now: 0)
        #expect(d == [.blocking(id(1, 1), owner: a, resource: "r", blocked: .pr)])
        let r = t.unlock(id(1, 1), valueBlock: [7], epoch: 1)
        #expect(r == [.released(id(1, 1), owner: a),
                      .granted(id(2, 1), owner: b, resource: "r", mode: .pr, valueBlock: ValueBlock(bytes: [7]))])
    }

    @Test func noQueueFailsAtOnce() {
        var t = LockTable(epoch: 1)
        _ = t.request(id(1, 1), owner: a, resource: "r", mode: .pw, epoch: 1, now: 0)
        #expect(t.request(id(2, 1), owner: b, resource: "r", mode: .cw, flags: .noQueue, epoch: 1, now: 0)
                == [.refused(id(2, 1), owner: b, error: .wouldBlock)])
        #expect(t.lock(id(2, 1)) == nil)
    }

    @Test func conversionsAreServedBeforeNewRequests() {
        var t = LockTable(epoch: 1)
        _ = t.request(id(1, 1), owner: a, resource: "r", mode: .pr, epoch: 1, now: 0)
        _ = t.request(id(2, 1), owner: b, resource: "r", mode: .pr, epoch: 1, now: 0)
        _ = t.request(id(3, 1), owner: c, resource: "r", mode: .ex, epoch: 1, now: 0)   // waits
        _ = t.convert(id(1, 1), to: .ex, epoch: 1, now: 0)                               // converts, queued
        let d = t.unlock(id(2, 1), epoch: 1)
        #expect(d.contains(.granted(id(1, 1), owner: a, resource: "r", mode: .ex, valueBlock: .empty)))
        #expect(t.lock(id(3, 1))?.grantedMode == nil)
    }

    @Test func conversionDeadlockPicksTheLaterConverterAsVictim() {
        var t = LockTable(epoch: 1)
        _ = t.request(id(1, 1), owner: a, resource: "r", mode: .pr, epoch: 1, now: 0)
        _ = t.request(id(2, 1), owner: b, resource: "r", mode: .pr, epoch: 1, now: 0)
        _ = t.convert(id(1, 1), to: .ex, epoch: 1, now: 0)
        let d = t.convert(id(2, 1), to: .ex, epoch: 1, now: 0)
        #expect(d == [.refused(id(2, 1), owner: b, error: .deadlock)])
        #expect(t.lock(id(2, 1))?.grantedMode == .pr)   // the victim keeps its old mode
        let u = t.unlock(id(2, 1), epoch: 1)
        #expect(u.contains(.granted(id(1, 1), owner: a, resource: "r", mode: .ex, valueBlock: .empty)))
    }

    @Test func convDeadlockDemotesTheLaterConverterInsteadOfRefusingIt() {
        var t = LockTable(epoch: 1)
        _ = t.request(id(1, 1), owner: a, resource: "r", mode: .pr, epoch: 1, now: 0)
        _ = t.request(id(2, 1), owner: b, resource: "r", mode: .pr, epoch: 1, now: 0)
        _ = t.convert(id(1, 1), to: .ex, epoch: 1, now: 0)
        let d = t.convert(id(2, 1), to: .ex, flags: .convDeadlock, epoch: 1, now: 0)
        // b drops to NL and keeps waiting for EX; a's conversion goes through; a is told b waits.
        #expect(d == [.demoted(id(2, 1), owner: b, resource: "r"),
                      .granted(id(1, 1), owner: a, resource: "r", mode: .ex, valueBlock: .empty),
                      .blocking(id(1, 1), owner: a, resource: "r", blocked: .ex)])
        #expect(t.lock(id(2, 1))?.grantedMode == .nl && t.lock(id(2, 1))?.requestedMode == .ex)
        let u = t.unlock(id(1, 1), valueBlock: [3], epoch: 1)
        #expect(u == [.released(id(1, 1), owner: a),
                      .granted(id(2, 1), owner: b, resource: "r", mode: .ex, valueBlock: ValueBlock(bytes: [3]))])
        // A cycle that demotion cannot break (it runs through another resource) is still refused,
        // and the lock keeps its mode.
        var x = LockTable(epoch: 1)
        _ = x.request(id(1, 1), owner: a, resource: "s", mode: .ex, epoch: 1, now: 0)
        _ = x.request(id(2, 1), owner: b, resource: "r", mode: .pr, epoch: 1, now: 0)
        _ = x.request(id(2, 2), owner: b, resource: "s", mode: .pr, epoch: 1, now: 0)   // b waits for a
        _ = x.request(id(1, 2), owner: a, resource: "r", mode: .cr, epoch: 1, now: 0)
        _ = x.request(id(3, 1), owner: c, resource: "r", mode: .pr, epoch: 1, now: 0)
        #expect(x.convert(id(1, 2), to: .ex, flags: .convDeadlock, epoch: 1, now: 0)
                == [.refused(id(1, 2), owner: a, error: .deadlock)])
        #expect(x.lock(id(1, 2))?.grantedMode == .cr)
    }

    @Test func crossResourceDeadlockIsDetected() {
        var t = LockTable(epoch: 1)
        _ = t.request(id(1, 1), owner: a, resource: "x", mode: .ex, epoch: 1, now: 0)
        _ = t.request(id(2, 1), owner: b, resource: "y", mode: .ex, epoch: 1, now: 0)
        _ = t.request(id(1, 2), owner: a, resource: "y", mode: .ex, epoch: 1, now: 0)
        #expect(t.request(id(2, 2), owner: b, resource: "x", mode: .ex, epoch: 1, now: 0)
                == [.refused(id(2, 2), owner: b, error: .deadlock)])
    }

    @Test func timeoutsAndCancelEndRequests() {
        var t = LockTable(epoch: 1)
        _ = t.request(id(1, 1), owner: a, resource: "r", mode: .ex, epoch: 1, now: 0)
        _ = t.request(id(2, 1), owner: b, resource: "r", mode: .ex, timeout: 100, epoch: 1, now: 0)
        _ = t.request(id(3, 1), owner: c, resource: "r", mode: .ex, epoch: 1, now: 0)
        #expect(t.nextDeadline() == 100)
        #expect(t.tick(now: 99).isEmpty)
        #expect(t.tick(now: 100) == [.refused(id(2, 1), owner: b, error: .timedOut)])
        #expect(t.cancel(id(3, 1)) == [.refused(id(3, 1), owner: c, error: .cancelled)])
        #expect(t.cancel(id(1, 1)) == [.refused(id(1, 1), owner: a, error: .notGranted)])
    }

    @Test func staleEpochIsRefused() {
        var t = LockTable(epoch: 5)
        #expect(t.request(id(1, 1), owner: a, resource: "r", mode: .ex, epoch: 4, now: 0)
                == [.refused(id(1, 1), owner: a, error: .staleEpoch(current: 5))])
    }

    @Test func purgeOfDeadWriterInvalidatesValueBlock() {
        var t = LockTable(epoch: 1)
        _ = t.request(id(1, 1), owner: a, resource: "r", mode: .ex, epoch: 1, now: 0)
        _ = t.request(id(2, 1), owner: b, resource: "r", mode: .pr, epoch: 1, now: 0)
        let d = t.purge(node: 1)
        #expect(d == [.granted(id(2, 1), owner: b, resource: "r", mode: .pr, valueBlock: ValueBlock(bytes: [], valid: false))])
    }

    @Test func recoveryGrantsNothingUntilItEndsAndKeepsValueBlockOfStrongHolder() {
        var t = LockTable(epoch: 1)
        t.beginRecovery(epoch: 2)
        #expect(t.recover(id(1, 1), owner: a, resource: "r", mode: .pr, valueBlock: ValueBlock(bytes: [9]), epoch: 2) == nil)
        #expect(t.recover(id(1, 1), owner: a, resource: "r", mode: .pr, valueBlock: ValueBlock(bytes: [9]), epoch: 2) == nil)   // re-sent: idempotent
        #expect(t.recover(id(1, 1), owner: a, resource: "r", mode: .ex, valueBlock: .empty, epoch: 2) == .duplicateLock)
        #expect(t.recover(id(2, 1), owner: b, resource: "r", mode: .ex, valueBlock: .empty, epoch: 2) == .notGranted)
        #expect(t.recover(id(2, 1), owner: b, resource: "r", mode: .ex, valueBlock: .empty, epoch: 1) == .staleEpoch(current: 2))
        #expect(t.recover(id(3, 1), owner: c, resource: "q", mode: .cr, valueBlock: ValueBlock(bytes: [1]), epoch: 2) == nil)
        #expect(t.request(id(2, 2), owner: b, resource: "r", mode: .cr, epoch: 2, now: 0).isEmpty)
        let d = t.endRecovery()
        #expect(d == [.granted(id(2, 2), owner: b, resource: "r", mode: .cr, valueBlock: ValueBlock(bytes: [9]))])
        #expect(t.resource("q")?.valueBlock.valid == false)
    }
}

func isGrant(_ d: LockDirective) -> Bool { if case .granted = d { return true } else { return false } }
