import ClusterTransport

/// What the lock master grants any one peer. Its port is reachable by anything on the cluster
/// network, so every resource a peer can make it spend is bounded; each refusal is answered with
/// a clear message and logged once with the peer's address.
public struct MasterLimits: Sendable {
    /// Before authentication: the handshake deadline and the connection caps, which the transport
    /// enforces (`ConnectionLimits`).
    public var connections = ConnectionLimits()
    /// Locks (held or waiting) of one node.
    public var maxLocksPerNode = 4_194_304
    /// Bytes of resource names of one node's locks.
    public var maxNameBytesPerNode = 256 << 20
    /// The locks of a node that disconnected and is not a member are purged after this long: the
    /// longest it could still act on them (a member's lease TTL, with margin), its fencing deadline.
    public var orphanGraceMillis: Int64 = 5_000

    public init() {}
}
