/// Who owns a lock: a node of the cluster and a process (or any client-chosen actor) on that node.
/// Deadlock detection works on owners, purge works on nodes.
public struct LockOwner: Hashable, Sendable, CustomStringConvertible {
    public var node: UInt32
    public var process: UInt32
    public init(node: UInt32, process: UInt32) {
        self.node = node
        self.process = process
    }
    public var description: String { "\(node).\(process)" }
}

/// A lock's identity, chosen by the node that owns it, so that it survives a change of master:
/// during recovery the survivors re-send their locks under the same ids.
public struct LockID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var node: UInt32
    public var serial: UInt64
    public init(node: UInt32, serial: UInt64) {
        self.node = node
        self.serial = serial
    }
    public static func < (a: LockID, b: LockID) -> Bool { (a.node, a.serial) < (b.node, b.serial) }
    public var description: String { "\(node):\(serial)" }
}

/// The epoch (generation) of the lock master: bumped by every election, it is the fencing token.
public typealias Epoch = UInt64

/// Time as the shell passes it in: nanoseconds on a monotonic clock. The table never reads a clock.
public typealias Instant = UInt64

/// Lock request flags.
public struct LockFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Try-lock: fail at once with `.wouldBlock` instead of queueing.
    public static let noQueue = LockFlags(rawValue: 1)
    /// CONVDEADLK, for conversions: if this conversion would close a deadlock, demote the lock's
    /// granted mode to NL instead of refusing it (when that breaks the cycle). The lock keeps
    /// waiting for the new mode; the holder is told (`LockDirective.demoted`) and must treat what
    /// the old mode protected as lost.
    public static let convDeadlock = LockFlags(rawValue: 2)
}
