import NIOCore
import NIOPosix

/// The client's connection loop: find the master, authenticate, resync or recover, serve, and on
/// loss start over. Runs until the client stops or fences itself.
extension LockClient {
    func connectionLoop() async {
        var backoff: UInt64 = 5_000_000
        while !Task.isCancelled, !state.withLock({ $0.stopped || $0.fenced }) {
            do {
                guard let leader = try await coordination.leader() else {
                    try await Task.sleep(nanoseconds: 10_000_000)
                    continue
                }
                try await serve(leader)
                backoff = 5_000_000
            } catch LockError.unauthenticated {
                // A wrong secret will not fix itself: fail what waits with a clear error.
                logger.error("authentication with the lock master failed: check the cluster secret")
                failAllWaiting(LockError.unauthenticated)
            } catch {
                logger.debug("connection to master failed: \(error)")
            }
            try? await Task.sleep(nanoseconds: backoff)
            backoff = min(backoff * 2, 200_000_000)
        }
    }

    func failAllWaiting(_ error: LockError) {
        let (pending, listings) = state.withLock { s in
            let p = Array(s.pending.values), l = s.listings
            s.pending = [:]
            s.listings = []
            return (p, l)
        }
        for p in pending { p.continuation.resume(throwing: error) }
        for l in listings { l.resume(throwing: error) }
    }

    /// One connection's life. Returns when the connection closes.
    private func serve(_ leader: Leadership) async throws {
        let parts = leader.address.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw LockError.protocolError("bad master address \(leader.address)") }
        let handshake = eventLoop.makePromise(of: (Epoch, Bool).self)
        let closed = eventLoop.makePromise(of: Void.self)
        let clientNonce = ClusterSecret.nonce()
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(1))
            .channelInitializer { [self] ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(WireCodec())
                    try ch.pipeline.syncOperations.addHandler(ClientConnectionHandler(client: self, clientNonce: clientNonce,
                                                                                     handshake: handshake, closed: closed))
                }
            }
            .connect(host: String(parts[0]), port: port).get()
        } catch {
            // No connection: complete the promises so none is left dangling.
            handshake.fail(error)
            closed.succeed(())
            throw error
        }
        // Every wait has a limit: a master that does not complete the handshake is dropped.
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(2)) {
            handshake.fail(LockError.protocolError("handshake timed out"))
        }
        let welcome: (Epoch, Bool)
        do {
            welcome = try await handshake.futureResult.get()
            timeout.cancel()
        } catch {
            timeout.cancel()
            channel.close(promise: nil)
            throw error
        }
        let epoch = welcome.0
        // Re-send what we hold (recovery under a new epoch, or resync under the same one), then
        // everything still pending, on the new connection, all stamped with the master's epoch.
        let toSend = state.withLock { s -> [WireMessage] in
            if let old = s.epoch, epoch < old {
                return []   // an older master than one we already followed: stale, refuse it
            }
            s.epoch = epoch
            s.channel = channel
            s.sessions += 1
            s.listingText = ""   // a listing cut off with the old connection is asked for again
            var msgs: [WireMessage] = s.held.sorted { $0.key < $1.key }.compactMap { id, h in
                // What we re-send is what we may still act on. A lock being unlocked is given up
                // already (the old master may have granted it elsewhere): not re-sent; its unlock
                // then finds it unknown and completes. A down-conversion in flight counts at the
                // lower mode, with the value block it writes.
                var mode = h.mode, vb = h.valueBlock
                switch s.pending[id]?.op {
                case .unlock: return nil
                case let .convert(to, _, _, written) where to < h.mode:
                    if h.mode.writesValueBlock, let written { vb = ValueBlock(bytes: written) }
                    mode = to
                default: break
                }
                return .recover(id, process: h.process, resource: h.resource, mode: mode, valueBlock: vb, epoch: epoch)
            }
            msgs.append(.recoverDone(epoch: epoch))
            msgs += s.pending.sorted { $0.key < $1.key }.map { id, p in LockClient.wire(id, p.op, epoch: epoch) }
            msgs += s.listings.map { _ in WireMessage.list }
            return msgs
        }
        guard !toSend.isEmpty else {
            channel.close(promise: nil)
            throw LockError.staleEpoch(current: epoch)
        }
        for m in toSend { channel.write(m, promise: nil) }
        channel.flush()
        logger.info("node \(node) connected to master \(leader), epoch \(epoch)")
        try? await closed.futureResult.get()
        state.withLock { s in if s.channel === channel { s.channel = nil } }
    }
}

final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WireMessage
    typealias OutboundOut = WireMessage
    private let client: LockClient
    private let clientNonce: [UInt8]
    private let handshake: EventLoopPromise<(Epoch, Bool)>
    private let closed: EventLoopPromise<Void>
    private var serverNonce: [UInt8]?
    private var welcomed = false

    init(client: LockClient, clientNonce: [UInt8], handshake: EventLoopPromise<(Epoch, Bool)>, closed: EventLoopPromise<Void>) {
        self.client = client
        self.clientNonce = clientNonce
        self.handshake = handshake
        self.closed = closed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let msg = unwrapInboundIn(data)
        if welcomed { return client.received(msg) }
        switch msg {
        case .hello(let nonce):
            serverNonce = nonce
            let mac = client.secret.clientProof(serverNonce: nonce, clientNonce: clientNonce, node: client.node)
            context.writeAndFlush(wrapOutboundOut(.auth(node: client.node, clientNonce: clientNonce, mac: mac)), promise: nil)
        case let .welcome(epoch, recovering, mac):
            // The master must prove it knows the secret too.
            guard let sn = serverNonce,
                  ClusterSecret.equal(mac, client.secret.serverProof(serverNonce: sn, clientNonce: clientNonce, node: client.node)) else {
                handshake.fail(LockError.unauthenticated)
                context.close(promise: nil)
                return
            }
            welcomed = true
            handshake.succeed((epoch, recovering))
        case .failure(let text):
            handshake.fail(text.contains("authentication") ? LockError.unauthenticated : LockError.protocolError(text))
            context.close(promise: nil)
        default:
            handshake.fail(LockError.protocolError("unexpected message before welcome"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshake.fail(LockError.disconnected)
        closed.succeed(())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        handshake.fail(error)
        context.close(promise: nil)
    }
}
