import NIOCore
import NIOPosix
import Logging

/// Accepts transport connections on one event loop (every connection's state and the services'
/// calls are on it, so a service needs no locks), authenticates them, and hands each to the
/// services `makeServices` creates for it.
public final class TransportServer: Sendable {
    private let channel: Channel
    private let admission: NIOLoopBound<ConnectionAdmission>
    public let loop: EventLoop

    /// Binds `host:port` (port 0 picks one). `identity` is this node and its volume, as peers see it.
    public init(host: String, port: Int, loop: EventLoop, secret: ClusterSecret, identity: PeerIdentity,
                limits: ConnectionLimits = ConnectionLimits(), logger: Logger = Logger(label: "transport.server"),
                makeServices: @escaping ServiceFactory) async throws {
        self.loop = loop
        let admission = try await loop.submit {
            NIOLoopBound(ConnectionAdmission(limits: limits, logger: logger), eventLoop: loop)
        }.get()
        self.admission = admission
        channel = try await ServerBootstrap(group: loop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Small reads until the peer has authenticated (the handshake raises it after).
            .childChannelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: Transport.maxFrameBeforeAuth))
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ConnectionHandler.install(on: ch, role: .server(admission), secret: secret, identity: identity,
                                                  handshakeTimeoutMillis: limits.handshakeTimeoutMillis, services: makeServices())
                }
            }
            .bind(host: host, port: port).get()
    }

    public var port: Int { channel.localAddress?.port ?? 0 }

    /// The latest refusals (address, kind, why), oldest first.
    public func recentRefusals() async throws -> [String] {
        try await loop.submit { [admission] in admission.value.log.recent }.get()
    }

    public func stop() async {
        try? await channel.close()
    }
}

/// Connects to a transport server and completes the handshake.
public enum TransportClient {
    /// Returns once both sides have proved the secret; throws `TransportError.authenticationFailed`,
    /// `.wrongVolume` or `.refused` (a limit, or no handshake within `handshakeTimeoutMillis`).
    public static func connect(host: String, port: Int, loop: EventLoop, secret: ClusterSecret, identity: PeerIdentity,
                               handshakeTimeoutMillis: Int64 = 2_000, connectTimeout: TimeAmount = .seconds(1),
                               makeServices: @escaping ServiceFactory) async throws -> TransportConnection {
        let established = loop.makePromise(of: TransportConnection.self)
        do {
            _ = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(connectTimeout)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ConnectionHandler.install(on: ch, role: .client(established), secret: secret, identity: identity,
                                                      handshakeTimeoutMillis: handshakeTimeoutMillis, services: makeServices())
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            established.fail(error)
            throw error
        }
        return try await established.futureResult.get()
    }
}
