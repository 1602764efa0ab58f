import ClusterTransport
import CSVFS
import Dispatch
import NIOCore

/// The coordinator's metadata RPC on one connection. Most calls are served on the event loop itself: they
/// take tens of microseconds in SQLite, and a hop to another thread and back cost more than that (about
/// 180 us a call, measured with the follower's RPC latency histogram). Calls that can wait on the LUN (a
/// sync flushes it, so does a write completion that fills unwritten blocks, a truncation or a fallocate may zero
/// or free much of a file) go to a queue, so they do
/// not hold up the lock grants of the connections that share the loop.
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
        let serve: @Sendable () -> Void = {
            // Between the master's stop and the end of the role, a request is answered with a failure, never
            // served by a database this node no longer owns.
            if let reply = service.serveHosted(request, from: peer) {
                connection.respond(to: message, with: ByteBuffer(bytes: reply))
            } else {
                connection.fail(message, "this node is no longer the coordinator")
            }
        }
        switch MetadataWire.requestKind(request) {
        case .setLock?, .lockConflict?, .withdrawLocks?:
            // A lock call that may sleep (until its grant, or until a new coordinator has heard every node's
            // reclaim) gets a thread of its own, never holding up the calls behind it, the reclaims among them.
            if MetadataWire.waitsForLock(request) || service.recoveringLocks { Self.lockWaits.async(execute: serve) } else { serve() }
        case .completeWrite? where MetadataWire.fillsBlocks(request):
            // It waits for a flush of the LUN (the blocks become written only once their data is durable), and
            // served side by side, concurrent writes share one.
            queue.async(execute: serve)
        case let kind? where Self.servedOnTheLoop.contains(kind): serve()
        default: queue.async(execute: serve)
        }
    }

    private static let lockWaits = DispatchQueue(label: "csvfs.lock-waits", attributes: .concurrent)

    /// The calls that never wait on the LUN's flush and touch a bounded amount of metadata (a write completion
    /// only when it fills no unwritten block).
    static let servedOnTheLoop: Set<MetadataCallKind> = [
        .lookup, .attributes, .createNode, .readlink, .link, .unlink, .rmdir, .rename, .readdir,
        .setXattr, .getXattr, .listXattrs, .removeXattr, .statistics, .opened, .released, .mapping,
        .prepareWrite, .completeWrite, .commit, .cancelLockWait, .unlock, .releaseRecordLocks, .fileLocks,
        .reclaimLocks, .depositLocks, .lockDelegations, .reclaimOpenFiles,
    ]

    func closed(_ connection: TransportConnection, reason: TransportError?) {}
}
