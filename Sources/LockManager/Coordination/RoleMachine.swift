/// What a node does with the coordinator role, decided from the coordination events alone: a pure
/// state machine (events and time in, directives out), as `LockTable` is for locks. The DLM node
/// hosts its lock master by it; the filesystem's role reads the same directives as "open the
/// metadata database at epoch E", "close it", "send metadata to the coordinator at A".
///
/// Rules: at most one epoch is hosted at a time; a change of epoch stops the old one before it
/// starts the new one; a fenced node hosts nothing. The shell carries the directives out in order
/// and reports a failed start with `hostFailed`, which is retried after `retryDelay` while the
/// leadership lasts.
public struct RoleMachine: Sendable {
    public enum Directive: Sendable, Hashable, CustomStringConvertible {
        /// Start hosting the role under this leadership's epoch.
        case host(Leadership)
        /// Stop hosting this epoch, before anything that follows.
        case stop(Epoch)
        /// The role is hosted elsewhere, by this leader (nil: by nobody known, or this node is fenced).
        case follow(Leadership?)

        public var description: String {
            switch self {
            case .host(let l): "host(\(l.epoch))"
            case .stop(let e): "stop(\(e))"
            case .follow(let l): "follow(\(l.map { "\($0.node)@\($0.epoch)" } ?? "none"))"
            }
        }
    }

    /// This node: a leader record naming it (an earlier incarnation's, or its own after fencing) is
    /// nothing to follow.
    public let node: UInt32
    public let retryDelay: UInt64
    /// The epoch the shell hosts, as told by the directives given so far.
    public private(set) var hosted: Epoch?
    private var own: Leadership?
    private var leader: Leadership?
    private var fenced = false
    private var followed: Leadership?
    private var retryAt: Instant?

    public init(node: UInt32, retryDelayNanos: UInt64 = 20_000_000) {
        self.node = node
        retryDelay = retryDelayNanos
    }

    public mutating func handle(_ event: CoordinationEvent, now: Instant) -> [Directive] {
        switch event {
        case .gainedLeadership(let l):
            // A win reported while fenced is stale: the lease it stood on has lapsed.
            guard !fenced else { break }
            own = l
            leader = l
            retryAt = nil
        case .lostLeadership(let l):
            if own == l { own = nil }
        case .leaderChanged(let l):
            leader = l
            // Another node leads under another epoch: whatever we held is gone.
            if let own, l != own { self.own = nil }
        case .membersChanged:
            break
        case .fenced:
            fenced = true
            own = nil
        case .unfenced:
            fenced = false
        }
        return reconcile(now: now)
    }

    /// The shell could not start hosting `epoch`; it tries again after `retryDelay`.
    public mutating func hostFailed(_ epoch: Epoch, now: Instant) -> [Directive] {
        guard hosted == epoch else { return [] }
        hosted = nil
        retryAt = now + retryDelay
        return []
    }

    public mutating func tick(now: Instant) -> [Directive] { reconcile(now: now) }

    /// When `tick` has something to do (a retry), if ever.
    public var nextDeadline: Instant? { retryAt }

    private mutating func reconcile(now: Instant) -> [Directive] {
        var out: [Directive] = []
        let wanted = fenced ? nil : own
        if let hosted, hosted != wanted?.epoch {
            out.append(.stop(hosted))
            self.hosted = nil
        }
        let target: Leadership? = (fenced || wanted != nil || leader?.node == node) ? nil : leader
        if followed != target {
            followed = target
            out.append(.follow(target))
        }
        if wanted == nil { retryAt = nil }
        if let wanted, hosted == nil {
            if let at = retryAt, now < at { return out }
            retryAt = nil
            hosted = wanted.epoch
            out.append(.host(wanted))
        }
        return out
    }
}
