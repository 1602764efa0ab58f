/// How a node tells that the cluster failed it, and how long its applications wait through a failure.
/// Set at mount (`-o lease_ttl=S,io_timeout=S`), shown by `csvfs status`.
public struct FailureDetection: Sendable, Codable, Equatable {
    /// The etcd lease a node must renew to stay a member (and the coordinator its role); nil with the local
    /// backend, whose lease is the node's OFD lock on the LUN, which the kernel drops when the process dies.
    public var leaseTTLSeconds: Int?
    /// How long a call waits for the coordinator (its answer, or a new one after a failover) and a change for
    /// its locks before the application gets an error (ETIMEDOUT, EIO).
    public var ioTimeoutSeconds: Int

    public static let defaultLeaseTTLSeconds = 3
    public static let defaultIOTimeoutSeconds = 60
    /// etcd refuses shorter leases with its default election timeouts.
    public static let leaseTTLRange = 2...600
    public static let ioTimeoutRange = 1...86_400

    public init(leaseTTLSeconds: Int?, ioTimeoutSeconds: Int = Self.defaultIOTimeoutSeconds) {
        self.leaseTTLSeconds = leaseTTLSeconds
        self.ioTimeoutSeconds = ioTimeoutSeconds
    }

    public var ioTimeout: Duration { .seconds(ioTimeoutSeconds) }

    public var description: String {
        let lease = leaseTTLSeconds.map { "etcd lease TTL \($0) s" } ?? "local backend (the lease is the node's lock on the LUN)"
        return "\(lease), I/O timeout \(ioTimeoutSeconds) s"
    }
}
