/// What the lock master grants any one peer. Its port is reachable by anything on the cluster
/// network, so every resource a peer can make it spend is bounded; each refusal is answered with
/// a clear message and logged once with the peer's address.
public struct MasterLimits: Sendable {
    /// A peer must authenticate within this time after connecting, or it is dropped.
    public var handshakeTimeoutMillis: Int64 = 3_000
    /// Open connections in all (authenticated or not). When they are all taken, a newcomer takes the
    /// place of the oldest connection still waiting to authenticate.
    public var maxConnections = 1_024
    /// Open connections from one IP address.
    public var maxConnectionsPerAddress = 64
    /// Locks (held or waiting) of one node.
    public var maxLocksPerNode = 4_194_304
    /// Bytes of resource names of one node's locks.
    public var maxNameBytesPerNode = 256 << 20
    /// The locks of a node that disconnected and is not a member are purged after this long: the
    /// longest it could still act on them (a member's lease TTL, with margin), its fencing deadline.
    public var orphanGraceMillis: Int64 = 5_000

    public init() {}
}
