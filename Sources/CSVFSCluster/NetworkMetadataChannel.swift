import ClusterTransport
import CSVFS
import Glibc
import Logging
import LockManager
import NIOCore

/// Carries metadata requests to the coordinator over the cluster transport, on the connection the node's
/// lock client keeps to the lock master: the coordinator hosts both, so one authenticated connection per
/// node carries its locks and its metadata (the transport multiplexes them by service). FUSE threads call
/// it synchronously: they are not event-loop threads, so they may wait on the reply's future.
///
/// Between two connections (a new coordinator, a reconnect) a call waits for the lock client's next one,
/// within its deadline. Requests that were in flight when a connection closed fail with `connectionLost`:
/// `RemoteMetadataService` sends those that may run twice again.
public final class NetworkMetadataChannel: MetadataChannel {
    private let client: LockClient
    private let logger: Logger

    public init(client: LockClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func exchange(_ request: [UInt8], deadline: ContinuousClock.Instant) throws(Errno) -> [UInt8] {
        let connection = try connection(before: deadline)
        let remaining = deadline - .now
        guard remaining > .zero else { throw .timedOut }
        do {
            let reply = try connection.request(.metadata, ByteBuffer(bytes: request), timeout: remaining).wait()
            return Array(reply.readableBytesView)
        } catch TransportError.timedOut {
            throw .timedOut
        } catch {
            logger.warning("metadata request to the coordinator lost: \(error)")
            throw .connectionLost
        }
    }

    /// The lock client's connection, waited for (polling: it is set by the client's own loop) until `deadline`.
    private func connection(before deadline: ContinuousClock.Instant) throws(Errno) -> TransportConnection {
        while true {
            if let live = client.connection, live.channel.isActive { return live }
            if let refusal = client.refusal {
                logger.error("the coordinator refuses this node: \(refusal)")
                throw .io
            }
            guard ContinuousClock.now < deadline else { throw .timedOut }
            usleep(2_000)
        }
    }
}
