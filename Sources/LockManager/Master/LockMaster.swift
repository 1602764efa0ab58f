import NIOCore
import NIOPosix
import Logging

/// The lock master: a TCP server (swift-nio) around the lock table, run by the elected node.
/// All its state lives on a single event loop, so the table needs no locks.
public final class LockMaster: Sendable {
    /// The master's port unless told otherwise: below Linux's ephemeral range (32768-60999), so an
    /// outgoing connection of any process cannot take it before the master binds.
    public static let defaultPort = 7420

    public let epoch: Epoch
    private let loop: EventLoop
    private let core: NIOLoopBound<MasterCore>
    private let channel: Channel
    private let membershipTask: Task<Void, Never>

    /// Binds `host:port` (port 0 picks one) and starts in recovery under `epoch`.
    public init(host: String, port: Int, epoch: Epoch, secret: ClusterSecret, coordination: any CoordinationBackend,
                group: EventLoopGroup, limits: MasterLimits = MasterLimits(),
                logger: Logger = Logger(label: "dlm.master")) async throws {
        let loop = group.next()
        self.loop = loop
        self.epoch = epoch
        let core = try await loop.submit { NIOLoopBound(MasterCore(loop: loop, epoch: epoch, coordination: coordination, limits: limits, logger: logger), eventLoop: loop) }.get()
        self.core = core
        channel = try await ServerBootstrap(group: loop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Small reads until the peer has authenticated (the handler raises it after).
            .childChannelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: WireFormat.maxFrameBeforeAuth))
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    let codec = WireCodec(maxFrame: WireFormat.maxFrameBeforeAuth)
                    try ch.pipeline.syncOperations.addHandler(codec)
                    try ch.pipeline.syncOperations.addHandler(MasterConnectionHandler(core: core, secret: secret, codec: codec))
                }
            }
            .bind(host: host, port: port).get()
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

    public var port: Int { channel.localAddress?.port ?? 0 }

    /// A text dump of resources, queues and holders.
    public func describe() async throws -> String {
        try await loop.submit { [core] in core.value.describe() }.get()
    }

    public func stop() async {
        membershipTask.cancel()
        try? await channel.close()
    }
}
