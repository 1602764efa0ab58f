import Primitives

/// How long a call of this node may wait for the cluster (a coordinator to route it to, a lock, an answer):
/// the I/O timeout from when it began, and never past the I/O timeout from when the node fenced itself.
/// A failover is a pause shorter than the timeout. A node cut off from the cluster pauses its applications
/// once, until the I/O timeout from its fence, and from then on fails every call that needs the cluster at
/// once with EIO, instead of making each one wait a whole timeout of its own (an `open` is a lookup and an
/// open, a write may need a map and a completion: each would have waited in turn).
public struct CallPatience: Sendable {
    public let timeout: Duration
    /// This node's write fence: closed when the node fenced itself (nil: a node that is never fenced).
    let fence: WriteFence?

    public init(timeout: Duration, fence: WriteFence?) {
        self.timeout = timeout
        self.fence = fence
    }

    /// How long a call that begins now may wait, at most (zero once the patience is exhausted).
    public var remaining: Duration {
        guard let fence, fence.isClosed else { return timeout }
        // The moment it closed is set just after the fence shuts: a reader between the two counts from now.
        let closedAt = fence.closedAt ?? WriteFence.now()
        let since = WriteFence.now() &- min(closedAt, WriteFence.now())
        let left = timeout - .nanoseconds(Int64(clamping: since))
        return left > .zero ? left : .zero
    }

    /// The moment a call that begins now must give up.
    public var deadline: ContinuousClock.Instant { .now + remaining }

    /// The node fenced itself more than the I/O timeout ago: a call that needs the cluster fails at once.
    public var isExhausted: Bool { fence?.isClosed == true && remaining == .zero }

    /// What a call that waited out its patience fails with: EIO on a fenced node (it will not be served), else
    /// ETIMEDOUT.
    public var expired: Errno { fence?.isClosed == true ? .io : .timedOut }
}
