import ClusterTransport
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
            } catch let error as TransportError {
                switch error {
                case .authenticationFailed, .wrongVolume:
                    // A wrong secret or volume will not fix itself: fail what waits with a clear error.
                    logger.error("the lock master refused node \(node) or was refused: \(error)")
                    state.withLock { $0.refusal = error }
                    failAllWaiting(LockError.unauthenticated)
                default:
                    logger.debug("connection to master failed: \(error)")
                }
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
        let welcomed = eventLoop.makePromise(of: (Epoch, Bool).self)
        let closed = eventLoop.makePromise(of: Void.self)
        let channel: TransportConnection
        do {
            channel = try await TransportClient.connect(host: String(parts[0]), port: port, loop: eventLoop, secret: secret,
                                                        identity: PeerIdentity(node: node, volume: volume)) { [self] in
                [.lockManager: ClientSession(client: self, welcomed: welcomed, closed: closed)]
            }
        } catch {
            // No connection: complete the promises so none is left dangling.
            welcomed.fail(error)
            closed.succeed(())
            throw error
        }
        // Every wait has a limit: a master that does not welcome us is dropped.
        let timeout = eventLoop.scheduleTask(in: .seconds(2)) {
            welcomed.fail(LockError.protocolError("the master sent no welcome"))
        }
        let welcome: (Epoch, Bool)
        do {
            welcome = try await welcomed.futureResult.get()
            timeout.cancel()
        } catch {
            timeout.cancel()
            channel.close()
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
            s.refusal = nil
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
            channel.close()
            throw LockError.staleEpoch(current: epoch)
        }
        for m in toSend { channel.send(m, flush: false) }
        channel.flush()
        logger.info("node \(node) connected to master \(leader), epoch \(epoch)")
        try? await closed.futureResult.get()
        state.withLock { s in if s.channel === channel { s.channel = nil } }
    }
}

/// The lock manager's service on the client's connection: the master's welcome first, then
/// lock traffic for the client.
final class ClientSession: TransportService {
    private let client: LockClient
    private let welcomed: EventLoopPromise<(Epoch, Bool)>
    private let ended: EventLoopPromise<Void>
    private var hasWelcome = false

    init(client: LockClient, welcomed: EventLoopPromise<(Epoch, Bool)>, closed: EventLoopPromise<Void>) {
        self.client = client
        self.welcomed = welcomed
        ended = closed
    }

    func opened(_ connection: TransportConnection) {}

    func received(_ message: InboundMessage, on connection: TransportConnection) {
        let msg: WireMessage
        do {
            msg = try WireMessage.decode(message.payload)
        } catch {
            return connection.close(Refusal(.protocolError, "\(error)"))
        }
        if hasWelcome { return client.received(msg) }
        guard case let .welcome(epoch, recovering) = msg else {
            welcomed.fail(LockError.protocolError("unexpected message before welcome"))
            return connection.close(Refusal(.protocolError, "unexpected message before welcome"))
        }
        hasWelcome = true
        welcomed.succeed((epoch, recovering))
    }

    func closed(_ connection: TransportConnection, reason: TransportError?) {
        welcomed.fail(reason ?? LockError.disconnected)
        ended.succeed(())
    }
}
