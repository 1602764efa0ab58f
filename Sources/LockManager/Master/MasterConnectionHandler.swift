import NIOCore

/// One node's connection to the master: handshake first, then lock traffic.
/// Until the peer has authenticated it may hold only a connection slot and a small buffer, for a
/// limited time: anything before authentication other than `auth`, a bad proof, a frame larger
/// than an `auth`, or no `auth` within the handshake deadline closes the connection.
final class MasterConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WireMessage
    typealias OutboundOut = WireMessage

    private let core: NIOLoopBound<MasterCore>
    private let secret: ClusterSecret
    private let codec: WireCodec
    private let serverNonce = ClusterSecret.nonce()
    private var node: UInt32?
    /// The peer's IP address, once it holds one of the master's connection slots.
    private var admittedAddress: String?
    private var handshakeDeadline: Scheduled<Void>?

    init(core: NIOLoopBound<MasterCore>, secret: ClusterSecret, codec: WireCodec) {
        self.core = core
        self.secret = secret
        self.codec = codec
    }

    func channelActive(context: ChannelHandlerContext) {
        let address = context.remoteAddress?.ipAddress ?? "unknown"
        if let refusal = core.value.admit(address: address, channel: context.channel) {
            refuse(context, refusal, kind: "connections")
            return
        }
        admittedAddress = address
        let timeout = core.value.limits.handshakeTimeoutMillis
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        handshakeDeadline = context.eventLoop.scheduleTask(in: .milliseconds(timeout)) {
            guard me.value.node == nil else { return }
            me.value.refuse(ctx.value, "handshake not completed within \(timeout) ms", kind: "handshake")
        }
        context.writeAndFlush(wrapOutboundOut(.hello(nonce: serverNonce)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let msg = unwrapInboundIn(data)
        guard let node else {
            guard case let .auth(n, clientNonce, mac) = msg,
                  ClusterSecret.equal(mac, secret.clientProof(serverNonce: serverNonce, clientNonce: clientNonce, node: n)) else {
                refuse(context, "authentication failed", kind: "authentication")
                return
            }
            self.node = n
            handshakeDeadline?.cancel()
            handshakeDeadline = nil
            // Authenticated: full-size frames and reads from now on.
            codec.maxFrame = WireFormat.maxFrame
            try? context.channel.syncOptions?.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator())
            let c = core.value
            c.authenticated(node: n, channel: context.channel)
            context.writeAndFlush(wrapOutboundOut(.welcome(epoch: c.table.epoch, recovering: c.table.recovering,
                                                           mac: secret.serverProof(serverNonce: serverNonce, clientNonce: clientNonce, node: n))),
                                  promise: nil)
            return
        }
        core.value.handle(msg, from: node, channel: context.channel)
    }

    /// Tells the peer why, logs it (once per peer address and kind), and closes.
    private func refuse(_ context: ChannelHandlerContext, _ why: String, kind: String) {
        core.value.logRefusal(kind: kind, address: context.remoteAddress?.ipAddress ?? "unknown", why)
        context.writeAndFlush(wrapOutboundOut(.failure(why)), promise: nil)
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // One flush for everything the burst of requests produced, on every connection.
        core.value.flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeDeadline?.cancel()
        if let node { core.value.disconnected(node: node, channel: context.channel) }
        if let admittedAddress { core.value.release(address: admittedAddress, channel: context.channel) }
        admittedAddress = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Malformed frames and I/O errors: tell the peer why, then close this connection only. Never trap.
        refuse(context, "\(error)", kind: node == nil ? "error before authentication" : "error")
    }
}
