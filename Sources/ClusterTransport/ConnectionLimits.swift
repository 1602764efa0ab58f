/// What a server grants any one peer. Its port is reachable by anything on the cluster network, so
/// every resource a peer can make it spend before it has authenticated is bounded; each refusal is
/// answered with a `Refusal` that says which limit, and logged once with the peer's address.
/// (After authentication frames may be `Transport.maxFrame` long; before it, `maxFrameBeforeAuth`.)
public struct ConnectionLimits: Sendable {
    /// A peer must authenticate within this time after connecting, or it is dropped.
    public var handshakeTimeoutMillis: Int64 = 3_000
    /// Open connections in all (authenticated or not). When they are all taken, a newcomer takes the
    /// place of the oldest connection still waiting to authenticate.
    public var maxConnections = 1_024
    /// Open connections from one IP address.
    public var maxConnectionsPerAddress = 64

    public init() {}
}
