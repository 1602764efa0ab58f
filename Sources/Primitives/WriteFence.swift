import Glibc
import Synchronization

/// Whether this node may still write to the LUN: sanlock's rule, a node writes only while the lease that lets
/// it act is valid, and stops before that lease could be given to anyone else. Every LUN write asks `admits()`
/// right before it is issued; one that is refused never reaches the LUN and fails with EIO.
///
/// The fence is open without limit until a coordination backend that has a lease bounds it (`lease(until:)`:
/// the etcd backend, at each renewal); the local backend's lease is the OFD lock of the live process, which
/// cannot outlive it, so it leaves the fence open. Once closed (the deadline passed, or `close`), it stays
/// closed: whatever this node cached or held may already be someone else's.
///
/// Deadlines are CLOCK_BOOTTIME, not CLOCK_MONOTONIC: a host suspended with its node in the middle of a lease
/// must find the lease gone when it wakes, and CLOCK_MONOTONIC stops while the host sleeps.
public final class WriteFence: Sendable {
    /// `unbounded`, `closed`, or the first instant (`now()`) at which writes are refused.
    private let deadline: Atomic<UInt64>
    private struct Closing {
        var reason: String?
        /// When it closed (`now()`'s clock): the lapsed lease's deadline, or the moment of `close`.
        var at: UInt64?
        var report: (@Sendable (String) -> Void)?
    }
    private let closing = Locked(Closing())

    private static let unbounded = UInt64.max
    private static let closed: UInt64 = 0

    public init() { deadline = Atomic(Self.unbounded) }

    /// The fence's clock, in nanoseconds.
    @inline(__always)
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Where the one line that says the fence closed goes (once, with why and since when); stderr until set.
    public func reportClosing(to report: @escaping @Sendable (String) -> Void) {
        closing.withLock { $0.report = report }
    }

    /// The lease was proved valid until `until` (`now()`'s clock): writes are admitted until then. A deadline
    /// never moves back, except from unbounded to the first lease; a closed fence stays closed.
    public func lease(until: UInt64) {
        var current = deadline.load(ordering: .acquiring)
        while current != Self.closed, current == Self.unbounded || until > current {
            let (exchanged, found) = deadline.compareExchange(expected: current, desired: max(until, 1), ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = found
        }
    }

    /// Refuses every write from now on (the lease lapsed or was given up, or a newer coordinator owns the volume).
    /// `expected`: the node is leaving on purpose (an unmount gives its lease up), nothing to alarm anyone about.
    public func close(_ reason: String, expected: Bool = false) {
        deadline.store(Self.closed, ordering: .releasing)
        announce(reason, at: Self.now(), quietly: expected)
    }

    /// Closes the fence because its lease lapsed: what a backend calls once it finds its lease's safe lifetime
    /// over, so the node says it fenced itself then, not at its next write. The line names the deadline.
    public func lapse() {
        let until = deadline.load(ordering: .acquiring)
        guard until != Self.closed, until != Self.unbounded else { return }
        lapsed(at: until)
    }

    /// Whether a write may be issued now. The hot path is one atomic load and one vDSO clock read.
    @inline(__always)
    public func admits() -> Bool {
        let until = deadline.load(ordering: .acquiring)
        if until == Self.unbounded { return true }
        if until != Self.closed, Self.now() < until { return true }
        if until != Self.closed { lapsed(at: until) }
        return false
    }

    public var isClosed: Bool { deadline.load(ordering: .acquiring) == Self.closed }

    /// Why the fence closed, once it has.
    public var reason: String? { closing.withLock { $0.reason } }

    /// When the fence closed (`now()`'s clock), once it has.
    public var closedAt: UInt64? { closing.withLock { $0.at } }

    private func lapsed(at until: UInt64) {
        let (exchanged, _) = deadline.compareExchange(expected: until, desired: Self.closed, ordering: .acquiringAndReleasing)
        // Lost to a renewal (the lease still holds) or to another closing (which announced itself).
        guard exchanged else { return }
        announce("lease lapsed at \(Self.wallClock(of: until))", at: until)
    }

    private func announce(_ reason: String, at instant: UInt64, quietly: Bool = false) {
        let report = closing.withLock { (state) -> (@Sendable (String) -> Void)? in
            guard state.reason == nil else { return nil }
            state.reason = reason
            state.at = instant
            guard !quietly else { return nil }
            return state.report ?? { line in _ = "csvfs: \(line)\n".withCString { write(2, $0, strlen($0)) } }
        }
        report?("fenced: \(reason), no LUN writes from now on")
    }

    /// `instant` of the fence's clock as Unix time with microseconds (what a test compares with its own clock).
    public static func wallClock(of instant: UInt64) -> String {
        var real = timespec()
        clock_gettime(CLOCK_REALTIME, &real)
        let realNow = Int64(real.tv_sec) * 1_000_000_000 + Int64(real.tv_nsec)
        let micros = (realNow - (Int64(now()) - Int64(instant))) / 1000
        let fraction = String(micros % 1_000_000)
        return "\(micros / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction) (Unix time)"
    }
}
