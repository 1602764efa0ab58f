import Crypto
import NIOCore
import Logging

/// The state of one transport connection, on its event loop: the handshake (as server or client),
/// then the dispatch of frames to the services, and the requests waiting for replies.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Frame
    typealias OutboundOut = Frame

    enum Role {
        case server(NIOLoopBound<ConnectionAdmission>)
        /// The promise is completed when the handshake ends, either way.
        case client(EventLoopPromise<TransportConnection>)
    }

    private let role: Role
    private let codec: FrameCodec
    private let secret: ClusterSecret
    private let identity: PeerIdentity
    private let handshakeTimeoutMillis: Int64
    private let services: [ServiceID: any TransportService]
    private let nonce = ClusterSecret.nonce()
    private var serverNonce: [UInt8]?
    private var serverIdentity: PeerIdentity?
    private var handshakeDeadline: Scheduled<Void>?
    /// Set once the handshake has completed.
    private(set) var connection: TransportConnection?
    /// Holds a slot of the server's admission (server side, once admitted).
    private var admittedAddress: String?
    private var closing = false
    /// The channel went inactive: nothing more is sent or answered.
    private var ended = false
    /// Why the connection ended, when it did not just close.
    private var endReason: TransportError?

    private var nextRequestID: UInt64 = 1
    private var waiting: [UInt64: (promise: EventLoopPromise<ByteBuffer>, timer: Scheduled<Void>)] = [:]
    private(set) var droppedReplies = 0
    var outstanding: Int { waiting.count }

    init(role: Role, codec: FrameCodec, secret: ClusterSecret, identity: PeerIdentity, handshakeTimeoutMillis: Int64,
         services: [ServiceID: any TransportService]) {
        self.role = role
        self.codec = codec
        self.secret = secret
        self.identity = identity
        self.handshakeTimeoutMillis = handshakeTimeoutMillis
        self.services = services
    }

    /// The pipeline of every transport connection: the frame codec, then this.
    static func install(on ch: Channel, role: Role, secret: ClusterSecret, identity: PeerIdentity,
                        handshakeTimeoutMillis: Int64, services: [ServiceID: any TransportService]) throws {
        let codec = FrameCodec()
        try ch.pipeline.syncOperations.addHandler(codec)
        try ch.pipeline.syncOperations.addHandler(
            ConnectionHandler(role: role, codec: codec, secret: secret, identity: identity,
                              handshakeTimeoutMillis: handshakeTimeoutMillis, services: services))
    }

    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: Handshake

    func channelActive(context: ChannelHandlerContext) {
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timeout = handshakeTimeoutMillis
        handshakeDeadline = context.eventLoop.scheduleTask(in: .milliseconds(timeout)) {
            guard me.value.connection == nil else { return }
            me.value.refuse(Refusal(.handshakeTimeout, "handshake not completed within \(timeout) ms"), kind: "handshake")
        }
        if case .server(let admission) = role {
            let address = context.remoteAddress?.ipAddress ?? "unknown"
            if let refusal = admission.value.admit(address: address, handler: self) {
                refuse(refusal, kind: "connections")
                return
            }
            admittedAddress = address
            sendControl(.hello(server: identity, nonce: nonce))
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if let connection {
            return dispatch(frame, on: connection)
        }
        guard frame.service == .control, frame.kind == .control, let msg = try? ControlMessage.decode(frame.payload) else {
            return refuse(Refusal(.authentication, "authentication failed: expected the handshake"), kind: "authentication")
        }
        switch (role, msg) {
        case (.server, .auth(let client, let clientNonce, let proof)):
            let nonces = Nonces(server: nonce, client: clientNonce)
            guard ClusterSecret.equal(proof, secret.clientProof(nonces, client: client, server: identity)) else {
                return refuse(Refusal(.authentication, "authentication failed: wrong cluster secret"), kind: "authentication")
            }
            guard client.volume == identity.volume else {
                return refuse(Refusal(.volume, "\(client) cannot join \(identity)"), kind: "volume")
            }
            sendControl(.welcome(proof: secret.serverProof(nonces, client: client, server: identity)))
            let keys = secret.sessionKeys(nonces, client: client, server: identity)
            established(peer: client, inbound: keys.clientToServer, outbound: keys.serverToClient, context: context)
        case (.client, .hello(let server, let serverNonce)):
            guard server.volume == identity.volume else {
                return refuse(Refusal(.volume, "\(server) serves another volume than \(identity)"), kind: "volume")
            }
            self.serverNonce = serverNonce
            serverIdentity = server
            sendControl(.auth(client: identity, nonce: nonce,
                              proof: secret.clientProof(Nonces(server: serverNonce, client: nonce), client: identity, server: server)))
        case (.client, .welcome(let proof)):
            guard let serverNonce, let serverIdentity else {
                return refuse(Refusal(.protocolError, "welcome before hello"), kind: "protocol")
            }
            let nonces = Nonces(server: serverNonce, client: nonce)
            // The server must prove it knows the secret too: a node never trusts an impostor.
            guard ClusterSecret.equal(proof, secret.serverProof(nonces, client: identity, server: serverIdentity)) else {
                return refuse(Refusal(.authentication, "authentication failed: the server did not prove the cluster secret"), kind: "authentication")
            }
            let keys = secret.sessionKeys(nonces, client: identity, server: serverIdentity)
            established(peer: serverIdentity, inbound: keys.serverToClient, outbound: keys.clientToServer, context: context)
        case (_, .refusal(let r)):
            endReason = r.error
            context.close(promise: nil)
        default:
            refuse(Refusal(.authentication, "authentication failed: unexpected handshake message"), kind: "authentication")
        }
    }

    private func established(peer: PeerIdentity, inbound: SymmetricKey, outbound: SymmetricKey, context: ChannelHandlerContext) {
        handshakeDeadline?.cancel()
        handshakeDeadline = nil
        codec.protect(inbound: FrameProtection(key: inbound), outbound: FrameProtection(key: outbound))
        // Authenticated: reads as large as the traffic needs.
        try? context.channel.syncOptions?.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator())
        let c = TransportConnection(peer: peer, channel: context.channel, handler: NIOLoopBound(self, eventLoop: context.eventLoop))
        connection = c
        switch role {
        case .server(let admission): admission.value.settled(self)
        case .client(let promise): promise.succeed(c)
        }
        for s in services.values { s.opened(c) }
    }

    // MARK: Traffic

    private func dispatch(_ frame: Frame, on connection: TransportConnection) {
        switch frame.kind {
        case .response, .failure:
            guard let w = waiting.removeValue(forKey: frame.requestID) else {
                // Its deadline passed (or it was never asked): dropped.
                droppedReplies += 1
                return
            }
            w.timer.cancel()
            if frame.kind == .response {
                w.promise.succeed(frame.payload)
            } else {
                w.promise.fail(TransportError.remote(String(decoding: frame.payload.readableBytesView, as: UTF8.self)))
            }
        case .oneWay, .request:
            guard let service = services[frame.service] else {
                return refuse(Refusal(.protocolError, "no \(frame.service) on this connection"), kind: "protocol")
            }
            let message = InboundMessage(service: frame.service, payload: frame.payload,
                                         requestID: frame.kind == .request ? frame.requestID : nil,
                                         timeoutMillis: frame.timeoutMillis == 0 ? nil : frame.timeoutMillis)
            service.received(message, on: connection)
        case .control:
            if frame.service == .control, case .refusal(let r)? = try? ControlMessage.decode(frame.payload) {
                endReason = r.error
                context?.close(promise: nil)
            } else {
                refuse(Refusal(.protocolError, "unexpected control frame after the handshake"), kind: "protocol")
            }
        }
    }

    func request(_ service: ServiceID, _ payload: ByteBuffer, timeoutNanos: Int64, promise: EventLoopPromise<ByteBuffer>) {
        guard let context, connection != nil, !closing, !ended else {
            return promise.fail(endReason ?? TransportError.closed)
        }
        let id = nextRequestID
        nextRequestID += 1
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timer = context.eventLoop.scheduleTask(in: .nanoseconds(timeoutNanos)) {
            guard let w = me.value.waiting.removeValue(forKey: id) else { return }
            w.promise.fail(TransportError.timedOut)
        }
        waiting[id] = (promise, timer)
        let millis = UInt32(clamping: (timeoutNanos + 999_999) / 1_000_000)
        let frame = Frame(service: service, kind: .request, requestID: id, timeoutMillis: millis, payload: payload)
        let sent = context.eventLoop.makePromise(of: Void.self)
        sent.futureResult.whenFailure { error in
            // Not sent (too large, or the connection went): the request fails now.
            guard let w = me.value.waiting.removeValue(forKey: id) else { return }
            w.timer.cancel()
            w.promise.fail(error as? TransportError ?? me.value.endReason ?? TransportError.closed)
        }
        context.writeAndFlush(wrapOutboundOut(frame), promise: sent)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let connection { for s in services.values { s.readComplete(connection) } }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        ended = true
        handshakeDeadline?.cancel()
        let reason = endReason ?? .closed
        for (_, w) in waiting {
            w.timer.cancel()
            w.promise.fail(reason)
        }
        waiting = [:]
        if case .server(let admission) = role, let admittedAddress {
            admission.value.release(address: admittedAddress, handler: self)
        }
        admittedAddress = nil
        if case .client(let promise) = role, connection == nil { promise.fail(reason) }
        if let connection { for s in services.values { s.closed(connection, reason: endReason) } }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Malformed frames, failed tags and I/O errors: say why, then close this connection only.
        let text = (error as? TransportError)?.description ?? "\(error)"
        refuse(Refusal(.protocolError, text), kind: connection == nil ? "error before authentication" : "error")
    }

    // MARK: Closing

    /// Tells the peer why, logs it (server side: once per address and kind), and closes.
    func refuse(_ refusal: Refusal, kind: String) {
        guard let context, !closing else { return }
        if case .server(let admission) = role {
            admission.value.log.note(kind: kind, address: context.remoteAddress?.ipAddress ?? "unknown", refusal.text)
        }
        closeConnection(refusal, ownError: true)
    }

    func closeConnection(_ refusal: Refusal?, ownError: Bool = false) {
        guard let context, !closing else { return }
        closing = true
        if let refusal {
            if endReason == nil { endReason = ownError ? refusal.error : nil }
            sendControl(.refusal(refusal))
        }
        context.close(promise: nil)
    }

    private func sendControl(_ msg: ControlMessage) {
        guard let context, let payload = try? msg.encode() else { return }
        context.writeAndFlush(wrapOutboundOut(Frame(service: .control, kind: .control, payload: payload)), promise: nil)
    }
}
