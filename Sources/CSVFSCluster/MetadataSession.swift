import ClusterTransport
import CSVFS
import Dispatch
import NIOCore

/// The coordinator's metadata RPC on one connection. Requests are served off the event loop, on a queue:
/// SQLite work on the loop would hold up every lock grant of the connections that share it. The store
/// serialises its writes itself, so the queue may run requests side by side (a sync waits on the LUN while
/// lookups go on).
final class MetadataSession: TransportService {
    private let service: RoutedMetadataService
    private let queue: DispatchQueue

    init(service: RoutedMetadataService, queue: DispatchQueue) {
        self.service = service
        self.queue = queue
    }

    func opened(_ connection: TransportConnection) {}

    func received(_ message: InboundMessage, on connection: TransportConnection) {
        guard message.requestID != nil else { return } // every metadata call expects its answer
        let request = Array(message.payload.readableBytesView)
        let peer = connection.peer.node
        let service = service
        queue.async {
            // Between the master's stop and the end of the role, a request is answered with a failure, never
            // served by a database this node no longer owns.
            if let reply = service.serveHosted(request, from: peer) {
                connection.respond(to: message, with: ByteBuffer(bytes: reply))
            } else {
                connection.fail(message, "this node is no longer the coordinator")
            }
        }
    }

    func closed(_ connection: TransportConnection, reason: TransportError?) {}
}
