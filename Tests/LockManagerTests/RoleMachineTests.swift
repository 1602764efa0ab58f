import Testing
import TestSupport
@testable import LockManager

@Suite struct RoleMachineTests {
    static func lead(_ node: UInt32, _ epoch: Epoch) -> Leadership { Leadership(node: node, address: "127.0.0.1:\(node)", epoch: epoch) }

    @Test func aChangeOfEpochStopsTheOldBeforeStartingTheNew() {
        var m = RoleMachine(node: 1)
        #expect(m.handle(.gainedLeadership(Self.lead(1, 5)), now: 0) == [.host(Self.lead(1, 5))])
        #expect(m.handle(.gainedLeadership(Self.lead(1, 9)), now: 1) == [.stop(5), .host(Self.lead(1, 9))])
        #expect(m.handle(.leaderChanged(Self.lead(2, 12)), now: 2) == [.stop(9), .follow(Self.lead(2, 12))])
        #expect(m.hosted == nil)
    }

    @Test func fencedHostsNothingUntilUnfencedAndLeadingAgain() {
        var m = RoleMachine(node: 1)
        _ = m.handle(.gainedLeadership(Self.lead(1, 5)), now: 0)
        #expect(m.handle(.fenced, now: 1) == [.stop(5)])
        // A fenced node ignores a win it heard of late, and after its lease is back it must win anew.
        #expect(m.handle(.gainedLeadership(Self.lead(1, 7)), now: 2) == [])
        #expect(m.handle(.unfenced, now: 3) == [])
        #expect(m.handle(.gainedLeadership(Self.lead(1, 8)), now: 4) == [.host(Self.lead(1, 8))])
    }

    @Test func aFailedStartIsRetriedAfterTheDelayOnlyWhileStillLeading() {
        var m = RoleMachine(node: 1, retryDelayNanos: 100)
        _ = m.handle(.gainedLeadership(Self.lead(1, 5)), now: 0)
        #expect(m.hostFailed(5, now: 10) == [])
        #expect(m.nextDeadline == 110)
        #expect(m.tick(now: 50) == [])
        #expect(m.tick(now: 110) == [.host(Self.lead(1, 5))])
        #expect(m.hostFailed(5, now: 120) == [])
        // Its own record is nothing to follow.
        #expect(m.handle(.lostLeadership(Self.lead(1, 5)), now: 130) == [])
        #expect(m.tick(now: 1_000) == [])
    }

    /// Seeded replays of racy event orders (late wins, losses of epochs never hosted, fencing in
    /// the middle of a start, failed starts): the shell model never hosts two epochs, a stop always
    /// names what is hosted, a fenced node hosts nothing, and a steady leader ends up hosted.
    @Test func replayedEventSequencesKeepTheRoleInvariants() throws {
        let seed = SeededRandom.seed(from: "ROLE_SEED", test: "RoleMachineTests")
        var rng = SeededRandom(seed: seed)
        for round in 0..<2_000 {
            var m = RoleMachine(node: 1, retryDelayNanos: 50)
            var hostedByShell: Epoch?
            var fenced = false
            var own: Leadership?
            var now: Instant = 0
            var nextEpoch: Epoch = 1
            func apply(_ ds: [RoleMachine.Directive], _ step: Int) throws {
                for d in ds {
                    switch d {
                    case .host(let l):
                        guard hostedByShell == nil else { throw ModelFailure("seed \(seed) round \(round) step \(step): host(\(l.epoch)) while \(hostedByShell!) is hosted") }
                        guard !fenced else { throw ModelFailure("seed \(seed) round \(round) step \(step): host while fenced") }
                        guard l == own else { throw ModelFailure("seed \(seed) round \(round) step \(step): host(\(l.epoch)) not this node's leadership") }
                        hostedByShell = l.epoch
                    case .stop(let e):
                        guard hostedByShell == e else { throw ModelFailure("seed \(seed) round \(round) step \(step): stop(\(e)) while hosting \(String(describing: hostedByShell))") }
                        hostedByShell = nil
                    case .follow:
                        break
                    }
                }
            }
            for step in 0..<60 {
                now += UInt64.random(in: 0...40, using: &rng)
                var ds: [RoleMachine.Directive]
                switch Int.random(in: 0..<9, using: &rng) {
                case 0, 1:
                    let l = Self.lead(1, nextEpoch)
                    nextEpoch += Epoch.random(in: 1...3, using: &rng)
                    if !fenced { own = l }
                    ds = m.handle(.gainedLeadership(l), now: now)
                case 2:
                    // A loss of the current leadership or of an older one that arrives late.
                    let l = Bool.random(using: &rng) ? own ?? Self.lead(1, 1) : Self.lead(1, Epoch.random(in: 1...nextEpoch, using: &rng))
                    if own == l { own = nil }
                    ds = m.handle(.lostLeadership(l), now: now)
                case 3:
                    let other = Self.lead(2, nextEpoch)
                    nextEpoch += 1
                    own = nil
                    ds = m.handle(.leaderChanged(other), now: now)
                case 4:
                    fenced = true
                    own = nil
                    ds = m.handle(.fenced, now: now)
                case 5:
                    fenced = false
                    ds = m.handle(.unfenced, now: now)
                case 6:
                    ds = m.handle(.membersChanged([1, 2]), now: now)
                case 7:
                    if let h = hostedByShell, Bool.random(using: &rng) {
                        hostedByShell = nil
                        ds = m.hostFailed(h, now: now)
                    } else { ds = [] }
                default:
                    ds = m.tick(now: now)
                }
                try apply(ds, step)
                #expect(m.hosted == hostedByShell)
                if fenced, hostedByShell != nil { throw ModelFailure("seed \(seed) round \(round) step \(step): fenced but hosting") }
            }
            // Quiet time: a node that still leads and is not fenced hosts its epoch.
            now += 1_000
            try apply(m.tick(now: now), 60)
            let expected = fenced ? nil : own?.epoch
            if hostedByShell != expected {
                throw ModelFailure("seed \(seed) round \(round): at rest hosts \(String(describing: hostedByShell)), leads \(String(describing: expected))")
            }
        }
    }

    /// The events of a view change: losses before gains, each change once.
    @Test func viewDifferencesGiveEachChangeOnceInOrder() {
        let a = Self.lead(1, 3), b = Self.lead(2, 8)
        let leading = CoordinationView(own: a, leader: a, members: [1, 2])
        let fencedView = CoordinationView(own: nil, leader: a, members: [1, 2], fenced: true)
        #expect(fencedView.events(since: leading) == [.fenced, .lostLeadership(a)])
        let following = CoordinationView(own: nil, leader: b, members: [2])
        #expect(following.events(since: leading) == [.lostLeadership(a), .leaderChanged(b), .membersChanged([2])])
        #expect(leading.events(since: CoordinationView()) == [.leaderChanged(a), .membersChanged([1, 2]), .gainedLeadership(a)])
        #expect(leading.events(since: leading).isEmpty)
    }
}
