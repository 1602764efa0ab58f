import Foundation
import Primitives

/// Who hosts the lock master, where, and under which epoch.
public struct Leadership: Sendable, Hashable, CustomStringConvertible {
    public var node: UInt32
    public var address: String
    public var epoch: Epoch
    public init(node: UInt32, address: String, epoch: Epoch) {
        self.node = node
        self.address = address
        self.epoch = epoch
    }
    public var description: String { "node \(node) at \(address), epoch \(epoch)" }
}

/// Election, liveness and epochs. The DLM asks it who the master is, who is alive, and whether this
/// node may still act on its locks. A node absent from `members()` is fenced: it has stopped acting.
public protocol CoordinationBackend: Sendable {
    var node: UInt32 { get }
    /// Join the cluster as a live member at `address` and campaign for leadership in the background.
    func start(address: String) async throws
    /// The current leader, as far as this node knows.
    func leader() async throws -> Leadership?
    /// This node's own leadership, if it won the election and still holds it.
    func ownLeadership() -> Leadership?
    /// Nodes that are alive and not fenced.
    func members() async throws -> Set<UInt32>
    /// True once this node must stop acting on its locks (its lease may be given to someone else).
    func isFenced() -> Bool
    /// The changes of leadership, membership and fencing this node observes, from its current state
    /// on (see `CoordinationEvent`); the stream ends when the backend stops.
    func events() -> AsyncStream<CoordinationEvent>
    func stop() async
}

/// The thread-safe box for state shared between background tasks and callers: `Primitives`' (shared
/// with CSVFS), named here for every file of the module.
typealias Locked = Primitives.Locked

public struct CoordinationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Monotonic clock in nanoseconds, for the shells (never the table).
public func monotonicNow() -> Instant {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
