/// A change a coordination backend observed. Events are the differences between two successive
/// `CoordinationView`s, so each change is reported once and in the order it was seen.
public enum CoordinationEvent: Sendable, Hashable, CustomStringConvertible {
    /// This node won the election: it may host the role under this epoch.
    case gainedLeadership(Leadership)
    /// This node no longer holds this leadership (stopped, fenced, or its election key vanished).
    case lostLeadership(Leadership)
    /// Who leads now, as far as this node knows (nil: nobody, for the moment).
    case leaderChanged(Leadership?)
    /// The live, unfenced members.
    case membersChanged(Set<UInt32>)
    /// This node can no longer prove its lease: it must stop acting at once.
    case fenced
    /// This node holds a valid lease again.
    case unfenced

    public var description: String {
        switch self {
        case .gainedLeadership(let l): "gained(\(l))"
        case .lostLeadership(let l): "lost(\(l))"
        case .leaderChanged(let l): "leader(\(l.map { "\($0)" } ?? "none"))"
        case .membersChanged(let m): "members(\(m.sorted()))"
        case .fenced: "fenced"
        case .unfenced: "unfenced"
        }
    }
}

/// Everything a backend knows about the cluster at one moment.
public struct CoordinationView: Sendable, Hashable {
    /// This node's leadership, while it holds it and is not fenced.
    public var own: Leadership?
    public var leader: Leadership?
    public var members: Set<UInt32> = []
    public var fenced = false

    public init(own: Leadership? = nil, leader: Leadership? = nil, members: Set<UInt32> = [], fenced: Bool = false) {
        self.own = own
        self.leader = leader
        self.members = members
        self.fenced = fenced
    }

    /// A fenced node holds nothing, and a node's own leadership is the leadership it knows of.
    var normalized: CoordinationView {
        var v = self
        if v.fenced { v.own = nil }
        if let own = v.own { v.leader = own }
        return v
    }

    /// The events that turn `old` into `self`: losses before gains, so a consumer that follows them
    /// in order never holds two roles at once.
    public func events(since old: CoordinationView) -> [CoordinationEvent] {
        var out: [CoordinationEvent] = []
        if fenced, !old.fenced { out.append(.fenced) }
        if let was = old.own, was != own { out.append(.lostLeadership(was)) }
        if leader != old.leader { out.append(.leaderChanged(leader)) }
        if members != old.members { out.append(.membersChanged(members)) }
        if !fenced, old.fenced { out.append(.unfenced) }
        if let now = own, now != old.own { out.append(.gainedLeadership(now)) }
        return out
    }
}

/// The backends' event plumbing: one current view, and subscribers that each receive every change
/// of it once, in order. A late subscriber first receives the current state (as the events from an
/// empty view), then the changes.
final class CoordinationEventHub: Sendable {
    private struct State {
        var view = CoordinationView()
        var subscribers: [UInt64: AsyncStream<CoordinationEvent>.Continuation] = [:]
        var nextID: UInt64 = 0
        var finished = false
    }
    private let state = Locked(State())

    var view: CoordinationView { state.withLock { $0.view } }

    func subscribe() -> AsyncStream<CoordinationEvent> {
        let (stream, continuation) = AsyncStream<CoordinationEvent>.makeStream()
        let id = state.withLock { s -> UInt64? in
            // Yielding under the lock keeps this subscriber's first events before any later change.
            for e in s.view.events(since: CoordinationView()) { continuation.yield(e) }
            if s.finished { continuation.finish(); return nil }
            let id = s.nextID
            s.nextID += 1
            s.subscribers[id] = continuation
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) } }
        }
        return stream
    }

    /// Applies a change to the view and delivers its events; returns them (for logging and tests).
    @discardableResult
    func update(_ change: (inout CoordinationView) -> Void) -> [CoordinationEvent] {
        state.withLock { s in Self.apply(change, to: &s) }
    }

    private static func apply(_ change: (inout CoordinationView) -> Void, to s: inout State) -> [CoordinationEvent] {
        guard !s.finished else { return [] }
        var next = s.view
        change(&next)
        next = next.normalized
        let events = next.events(since: s.view)
        s.view = next
        // Under the lock, so concurrent updaters cannot reorder one subscriber's events.
        for c in s.subscribers.values { for e in events { c.yield(e) } }
        return events
    }

    /// The backend stopped: a last change, then the end of every stream, with no other change in
    /// between. Later updates are ignored; later subscribers get the last state, then the end.
    func finish(_ last: (inout CoordinationView) -> Void) {
        let ended = state.withLock { s in
            _ = Self.apply(last, to: &s)
            s.finished = true
            defer { s.subscribers = [:] }
            return Array(s.subscribers.values)
        }
        // Outside the lock: finishing runs each stream's onTermination, which takes the lock. No
        // change can slip in between, `finished` already turns updates away.
        for c in ended { c.finish() }
    }
}
