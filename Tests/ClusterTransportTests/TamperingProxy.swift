import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A loopback TCP proxy between a client and a server that changes the client's bytes on the way
/// as the test asks: what an attacker on the path can do.
final class TamperingProxy: Sendable {
    enum Tamper: Sendable {
        case pass
        /// Flip one bit of the next chunk, `fromEnd` bytes before its end.
        case flip(fromEnd: Int)
        /// Forward the next chunk, then the one before it again (a replay).
        case replayPrevious
        /// Send these bytes before the next chunk (an injected frame).
        case inject([UInt8])
        /// Hold the next chunk and send it after the one that follows (reordering).
        case swapNextTwo
        /// Drop the next chunk.
        case drop
    }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server: Channel
    let tamper = NIOLockedValueBox<Tamper>(.pass)
    /// Chunks seen from the client, in order.
    let chunks = NIOLockedValueBox<Int>(0)
    var port: Int { server.localAddress!.port! }

    init(targetPort: Int) async throws {
        let tamper = self.tamper, chunks = self.chunks
        server = try await ServerBootstrap(group: group)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMap { outbound in
                        inbound.eventLoop.makeCompletedFuture {
                            try inbound.pipeline.syncOperations.addHandler(ClientToServer(peer: outbound, tamper: tamper, chunks: chunks))
                            try outbound.pipeline.syncOperations.addHandler(Forward(peer: inbound))
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func set(_ t: Tamper) { tamper.withLockedValue { $0 = t } }

    func stop() async {
        try? await server.close()
        try? await group.shutdownGracefully()
    }

    final class Forward: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: Channel
        init(peer: Channel) { self.peer = peer }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { peer.writeAndFlush(unwrapInboundIn(data), promise: nil) }
        func channelInactive(context: ChannelHandlerContext) { peer.close(promise: nil) }
    }

    final class ClientToServer: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let peer: Channel
        let tamper: NIOLockedValueBox<Tamper>
        let chunks: NIOLockedValueBox<Int>
        var previous: ByteBuffer?
        var held: ByteBuffer?
        init(peer: Channel, tamper: NIOLockedValueBox<Tamper>, chunks: NIOLockedValueBox<Int>) {
            self.peer = peer
            self.tamper = tamper
            self.chunks = chunks
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = unwrapInboundIn(data)
            chunks.withLockedValue { $0 += 1 }
            let t = tamper.withLockedValue { t -> Tamper in
                let now = t
                if case .swapNextTwo = t, held == nil { return now }   // stays until the second chunk
                t = .pass
                return now
            }
            switch t {
            case .pass:
                peer.writeAndFlush(chunk, promise: nil)
            case .flip(let fromEnd):
                let at = chunk.writerIndex - 1 - fromEnd
                chunk.setInteger(chunk.getInteger(at: at, as: UInt8.self)! ^ 0x01, at: at)
                peer.writeAndFlush(chunk, promise: nil)
            case .replayPrevious:
                peer.write(chunk, promise: nil)
                if let previous { peer.write(previous, promise: nil) }
                peer.flush()
            case .inject(let bytes):
                peer.write(ByteBuffer(bytes: bytes), promise: nil)
                peer.writeAndFlush(chunk, promise: nil)
            case .swapNextTwo:
                if let first = held {
                    held = nil
                    tamper.withLockedValue { $0 = .pass }
                    peer.write(chunk, promise: nil)
                    peer.writeAndFlush(first, promise: nil)
                } else {
                    held = chunk
                }
            case .drop:
                break
            }
            previous = chunk
        }
        func channelInactive(context: ChannelHandlerContext) { peer.close(promise: nil) }
    }
}
