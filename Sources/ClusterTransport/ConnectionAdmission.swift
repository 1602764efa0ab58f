import Logging

/// The server's count of connections, in all and per peer address, on its event loop: who may
/// take a slot (`ConnectionLimits`), and the refusals logged.
final class ConnectionAdmission {
    let limits: ConnectionLimits
    var log: RefusalLog
    private var count = 0
    private var byAddress: [String: Int] = [:]
    /// Admitted connections that have not authenticated yet, oldest first.
    private var awaitingAuthentication: [ConnectionHandler] = []

    init(limits: ConnectionLimits, logger: Logger) {
        self.limits = limits
        log = RefusalLog(logger: logger)
    }

    /// Takes a slot for a new peer, or says why not. When all slots are taken, the oldest
    /// connection that has not authenticated yet makes way (a flood of them cannot keep a node from
    /// reconnecting, as every node does after a failover); only when every slot is an
    /// authenticated node's is the newcomer refused.
    func admit(address: String, handler: ConnectionHandler) -> Refusal? {
        if byAddress[address, default: 0] >= limits.maxConnectionsPerAddress {
            return Refusal(.limit, "too many connections from \(address) (limit \(limits.maxConnectionsPerAddress))")
        }
        if count >= limits.maxConnections {
            guard !awaitingAuthentication.isEmpty else {
                return Refusal(.limit, "too many connections (limit \(limits.maxConnections))")
            }
            let oldest = awaitingAuthentication.removeFirst()
            oldest.refuse(Refusal(.limit, "dropped: the server has \(limits.maxConnections) connections and this one had not authenticated"),
                          kind: "connections")
        }
        count += 1
        byAddress[address, default: 0] += 1
        awaitingAuthentication.append(handler)
        return nil
    }

    /// The connection authenticated, or closed.
    func settled(_ handler: ConnectionHandler) {
        awaitingAuthentication.removeAll { $0 === handler }
    }

    func release(address: String, handler: ConnectionHandler) {
        settled(handler)
        count -= 1
        byAddress[address, default: 1] -= 1
        if byAddress[address] == 0 { byAddress[address] = nil }
    }
}
