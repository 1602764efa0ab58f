import NIOCore
import NIOPosix
import Foundation

/// A loopback TCP proxy the test can cut, to isolate one node from etcd.
final class TCPProxy: Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server: Channel
    let children = NIOLockedChannels()
    var endpoint: String { "http://127.0.0.1:\(server.localAddress!.port!)" }

    init(target: String) async throws {
        let parts = target.replacingOccurrences(of: "http://", with: "").split(separator: ":")
        let host = String(parts[0]), port = Int(parts[1])!
        let group = self.group
        let children = self.children
        server = try await ServerBootstrap(group: group)
            .childChannelInitializer { inbound in
                children.add(inbound)
                return ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: host, port: port)
                    .flatMap { outbound in
                        children.add(outbound)
                        return inbound.pipeline.addHandler(Glue(peer: outbound)).flatMap {
                            outbound.pipeline.addHandler(Glue(peer: inbound))
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// Drop the current connections but keep accepting new ones (a network blip).
    func dropConnections() async {
        for ch in children.all() { try? await ch.close() }
    }

    /// Cut every connection and refuse new ones.
    func cut() async {
        try? await server.close()
        for ch in children.all() { try? await ch.close() }
    }

    func stop() async {
        await cut()
        try? await group.shutdownGracefully()
    }

    final class Glue: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: Channel
        init(peer: Channel) { self.peer = peer }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            peer.writeAndFlush(unwrapInboundIn(data), promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) { peer.close(promise: nil) }
    }
}

final class NIOLockedChannels: @unchecked Sendable {
    // Guarded by `lock`.
    private let lock = NSLock()
    private var channels: [Channel] = []
    func add(_ c: Channel) { lock.lock(); channels.append(c); lock.unlock() }
    func all() -> [Channel] { lock.lock(); defer { lock.unlock() }; return channels }
}
