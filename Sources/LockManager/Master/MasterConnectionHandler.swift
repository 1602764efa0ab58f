import NIOCore

/// One node's connection to the master: handshake first, then lock traffic.
/// Anything before authentication other than `auth`, or a bad proof, closes the connection.
final class MasterConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WireMessage
    typealias OutboundOut = WireMessage

    private let core: NIOLoopBound<MasterCore>
    private let secret: ClusterSecret
    private let serverNonce = ClusterSecret.nonce()
    private var node: UInt32?

    init(core: NIOLoopBound<MasterCore>, secret: ClusterSecret) {
        self.core = core
        self.secret = secret
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.hello(nonce: serverNonce)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let msg = unwrapInboundIn(data)
        guard let node else {
            guard case let .auth(n, clientNonce, mac) = msg,
                  ClusterSecret.equal(mac, secret.clientProof(serverNonce: serverNonce, clientNonce: clientNonce, node: n)) else {
                core.value.logger.warning("refused an unauthenticated peer \(String(describing: context.remoteAddress))")
                context.writeAndFlush(wrapOutboundOut(.failure("authentication failed")), promise: nil)
                context.close(promise: nil)
                return
            }
            self.node = n
            let c = core.value
            c.authenticated(node: n, channel: context.channel)
            context.writeAndFlush(wrapOutboundOut(.welcome(epoch: c.table.epoch, recovering: c.table.recovering,
                                                           mac: secret.serverProof(serverNonce: serverNonce, clientNonce: clientNonce, node: n))),
                                  promise: nil)
            return
        }
        core.value.handle(msg, from: node, channel: context.channel)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // One flush for everything the burst of requests produced, on every connection.
        core.value.flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let node { core.value.disconnected(node: node, channel: context.channel) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Malformed frames and I/O errors: tell the peer why, then close. Never trap.
        context.writeAndFlush(wrapOutboundOut(.failure("\(error)")), promise: nil)
        context.close(promise: nil)
    }
}
