/// A moment in the cache policy's history of grants and releases: taken before the metadata a reply
/// carries is read, so the policy can tell whether that metadata was read while it was protected.
public struct CacheTicket: Sendable, Comparable {
    public let event: UInt64
    public init(_ event: UInt64) { self.event = event }
    public static func < (a: CacheTicket, b: CacheTicket) -> Bool { a.event < b.event }
}

/// What the FUSE adapter asks before it lets the kernel cache a name or attributes. The single-node mount
/// answers with a fixed timeout (it sees every change itself); a cluster node answers from the DLM locks it
/// holds, and drops what the kernel cached when it gives one up (GFS2's rule: a cache lives only under a lock).
public protocol KernelCachePolicy: Sendable {
    /// Taken before reading the metadata that a reply to the kernel carries.
    func ticket() -> CacheTicket
    /// Seconds the kernel may keep `ino`'s attributes, read after `ticket`.
    func attributeTimeout(_ ino: UInt64, since ticket: CacheTicket) -> Double
    /// Seconds the kernel may keep a name (positive or negative), read after `ticket`.
    func entryTimeout(since ticket: CacheTicket) -> Double
    /// The kernel evicted `ino` (FORGET): it caches nothing of it any more.
    func forgotten(_ ino: UInt64)
    /// Where the policy sends its invalidations, attached while the mount serves; nil if it sends none.
    var notifier: KernelNotifier? { get }
}

/// The single-node mount's policy: every change goes through this mount, so the kernel may cache for a
/// fixed time and nothing ever needs invalidating.
public struct FixedKernelCachePolicy: KernelCachePolicy {
    public static let alone = 1.0
    public let seconds: Double

    public init(seconds: Double = FixedKernelCachePolicy.alone) { self.seconds = seconds }

    public func ticket() -> CacheTicket { CacheTicket(0) }
    public func attributeTimeout(_ ino: UInt64, since ticket: CacheTicket) -> Double { seconds }
    public func entryTimeout(since ticket: CacheTicket) -> Double { seconds }
    public func forgotten(_ ino: UInt64) {}
    public var notifier: KernelNotifier? { nil }
}
