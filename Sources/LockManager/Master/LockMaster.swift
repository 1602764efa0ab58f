import ClusterTransport
import NIOCore
import NIOPosix
import Logging

/// The lock master: the lock manager's service on a cluster transport server, run by the elected
/// node, around the lock table. All its state lives on a single event loop, so the table needs no locks.
public final class LockMaster: Sendable {
    /// The master's port unless told otherwise: below Linux's ephemeral range (32768-60999), so an
    /// outgoing connection of any process cannot take it before the master binds.
    public static let defaultPort = 7420

    public let epoch: Epoch
    private let loop: EventLoop
    private let core: NIOLoopBound<MasterCore>
    private let server: TransportServer
    private let membershipTask: Task<Void, Never>

    /// Binds `host:port` (port 0 picks one) and starts in recovery under `epoch`. Only nodes that
    /// prove `secret` for `volume` get in. `services` adds other services of the coordinator (the
    /// metadata RPC) to every connection, so one port serves locks and metadata.
    public init(host: String, port: Int, epoch: Epoch, secret: ClusterSecret, volume: String = "",
                coordination: any CoordinationBackend, group: EventLoopGroup, limits: MasterLimits = MasterLimits(),
                services: @escaping ServiceFactory = { [:] },
                logger: Logger = Logger(label: "dlm.master")) async throws {
        let loop = group.next()
        self.loop = loop
        self.epoch = epoch
        let core = try await loop.submit { NIOLoopBound(MasterCore(loop: loop, epoch: epoch, coordination: coordination, limits: limits, logger: logger), eventLoop: loop) }.get()
        self.core = core
        server = try await TransportServer(host: host, port: port, loop: loop, secret: secret,
                                           identity: PeerIdentity(node: coordination.node, volume: volume),
                                           limits: limits.connections, logger: logger) {
            services().merging([.lockManager: MasterSession(core: core.value)]) { _, lockManager in lockManager }
        }
        // Membership drives both the end of recovery and the purge of fenced nodes.
        membershipTask = Task {
            while !Task.isCancelled {
                if let members = try? await coordination.members() {
                    loop.execute { core.value.membershipChanged(members) }
                }
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }
    }

    public var port: Int { server.port }

    /// A text dump of resources, queues and holders.
    public func describe() async throws -> String {
        try await loop.submit { [core] in core.value.describe() }.get()
    }

    /// The latest refusals of peers (address, kind, why).
    public func recentRefusals() async throws -> [String] {
        try await server.recentRefusals()
    }

    public func stop() async {
        membershipTask.cancel()
        await server.stop()
    }
}
