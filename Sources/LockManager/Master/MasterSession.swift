import ClusterTransport
import NIOCore

/// The lock manager's service on one authenticated connection to the master. The transport has
/// done the handshake, the limits before it and the integrity of every frame; this decodes the
/// lock messages and hands them to the master's core. A message that does not decode closes the
/// connection with a clear refusal (only this one).
final class MasterSession: TransportService {
    private let core: MasterCore

    init(core: MasterCore) { self.core = core }

    func opened(_ connection: TransportConnection) {
        core.authenticated(connection)
    }

    func received(_ message: InboundMessage, on connection: TransportConnection) {
        let msg: WireMessage
        do {
            msg = try WireMessage.decode(message.payload)
        } catch {
            core.logRefusal(kind: "error", address: connection.remoteAddress, "\(error)")
            return connection.close(Refusal(.protocolError, "\(error)"))
        }
        core.handle(msg, from: connection)
    }

    func readComplete(_ connection: TransportConnection) {
        // One flush for everything the burst of requests produced, on every connection.
        core.flush()
    }

    func closed(_ connection: TransportConnection, reason: TransportError?) {
        core.disconnected(connection)
    }
}
