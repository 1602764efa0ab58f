import ClusterTransport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A server that does not know the cluster secret and lets anyone in: it answers the auth with a
/// welcome whose proof is made up, and records the refusal the client sends.
final class ImpostorServer: Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    let refused: NIOLockedValueBox<Refusal?> = NIOLockedValueBox(nil)
    var port: Int { channel.localAddress!.port! }

    init() async throws {
        let refused = self.refused
        channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(Handler(refused: refused)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// The client's refusal, once it came (nil if none within 5 s).
    func refusal() async throws -> Refusal? {
        for _ in 0..<500 {
            if let r = refused.withLockedValue({ $0 }) { return r }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        return nil
    }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let refused: NIOLockedValueBox<Refusal?>
        var inbox = ByteBuffer()
        init(refused: NIOLockedValueBox<Refusal?>) { self.refused = refused }

        func send(_ m: ControlMessage, _ context: ChannelHandlerContext) {
            var out = ByteBuffer()
            var none: FrameProtection?
            try! Frame(service: ServiceID(rawValue: 0), kind: .control, payload: try! m.encode()).encode(into: &out, protection: &none)
            context.writeAndFlush(NIOAny(out), promise: nil)
        }
        func channelActive(context: ChannelHandlerContext) {
            send(.hello(server: PeerIdentity(node: 1, volume: "vol-A"), nonce: ClusterSecret.nonce()), context)
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = unwrapInboundIn(data)
            inbox.writeBuffer(&chunk)
            var none: FrameProtection?
            while let f = try? Frame.next(from: &inbox, maxFrame: Transport.maxFrame, protection: &none) {
                switch try? ControlMessage.decode(f.payload) {
                case .auth?: send(.welcome(proof: Array(repeating: 0x42, count: 32)), context)
                case .refusal(let r)?: refused.withLockedValue { $0 = r }
                default: break
                }
            }
        }
    }
}
