/// Carries one encoded metadata request to the node that owns the metadata and brings back its encoded
/// reply. Synchronous: the FUSE threads call the metadata service synchronously.
public protocol MetadataChannel: Sendable {
    /// The reply to `request`, or ETIMEDOUT once `deadline` has passed without one, or `connectionLost` when
    /// the way to the coordinator broke with the request in flight.
    func exchange(_ request: [UInt8], deadline: ContinuousClock.Instant) throws(Errno) -> [UInt8]
}

/// A channel to a server in this process. The messages really are encoded and decoded on both sides, so
/// everything but the network is exercised as it will be between nodes.
public struct LoopbackMetadataChannel: MetadataChannel {
    private let server: MetadataServer

    public init(server: MetadataServer) {
        self.server = server
    }

    /// A request already past its deadline is not served: its caller has given up on it.
    public func exchange(_ request: [UInt8], deadline: ContinuousClock.Instant) throws(Errno) -> [UInt8] {
        guard ContinuousClock.now < deadline else { throw .timedOut }
        return server.serve(request)
    }
}
