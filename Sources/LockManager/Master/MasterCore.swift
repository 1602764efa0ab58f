import ClusterTransport
import NIOCore
import Logging

/// The lock master's shell around the pure `LockTable`: it owns the connections of the nodes and
/// carries out the table's directives. It lives on one event loop and is only touched there.
final class MasterCore {
    let loop: EventLoop
    let coordination: any CoordinationBackend
    let logger: Logger
    let limits: MasterLimits
    var table: LockTable
    /// The authenticated connection of each node (one per node; a newer one replaces an older one).
    var connections: [UInt32: TransportConnection] = [:]
    /// Nodes that have re-sent their locks under the current epoch.
    var recovered: Set<UInt32> = []
    /// Locks a reconnecting node said it holds, until its `recoverDone` (same-epoch resync).
    var resync: [UInt32: Set<LockID>] = [:]
    var members: Set<UInt32> = []
    /// Nodes that disconnected while not members, and since when: their locks are purged once
    /// `limits.orphanGraceMillis` has passed (their fencing deadline), unless they come back.
    var orphanedSince: [UInt32: Instant] = [:]
    /// Refusals of lock limits, logged once per node and address (the transport logs its own).
    private var refusals: RefusalLog
    var tickTask: Scheduled<Void>?
    var tickAt: Instant?
    var recoveryStarted: Instant = monotonicNow()
    var recoveryEnded: Instant?
    /// Connections written to since the last flush. Replies are flushed once per read burst
    /// (`flush()` from the handler's channelReadComplete) and at the end of every other entry
    /// point: with many clients, one syscall carries several replies.
    private var unflushed: [TransportConnection] = []

    init(loop: EventLoop, epoch: Epoch, coordination: any CoordinationBackend, limits: MasterLimits, logger: Logger) {
        self.loop = loop
        self.coordination = coordination
        self.limits = limits
        self.logger = logger
        refusals = RefusalLog(logger: logger)
        // A new master starts in recovery: nothing is granted until the survivors have re-sent.
        table = LockTable(epoch: epoch, recovering: true)
    }

    // MARK: Connections

    func logRefusal(kind: String, address: String, _ why: String) {
        refusals.note(kind: kind, address: address, why)
    }

    func authenticated(_ connection: TransportConnection) {
        let node = connection.peer.node
        orphanedSince[node] = nil
        if let old = connections[node], old !== connection { old.close(Refusal(.closing, "node \(node) connected again")) }
        // Whatever the node had queued on an older connection is void; it re-sends. The
        // refusals are not delivered (no connection is registered yet): the node does not wait
        // for them, and they must not reach the new session before its welcome.
        connections[node] = nil
        cancelPending(of: node)
        // The first message of every session: the epoch, and whether recovery is on.
        connections[node] = connection
        send(.welcome(epoch: table.epoch, recovering: table.recovering), to: connection)
        flush()
    }

    func disconnected(_ connection: TransportConnection) {
        let node = connection.peer.node
        guard connections[node] === connection else { return }
        connections[node] = nil
        cancelPending(of: node)
        if !members.contains(node), table.usage(of: node).locks > 0 { orphanedSince[node] = monotonicNow() }
        flush()
    }

    private func cancelPending(of node: UInt32) {
        for id in table.queuedRequests(of: node) { dispatch(table.cancel(id)) }
    }

    func handle(_ msg: WireMessage, from channel: TransportConnection) {
        let node = channel.peer.node
        let now = monotonicNow()
        switch msg {
        case let .request(id, process, resource, mode, flags, t, epoch):
            guard id.node == node else { return reply(channel, .refused(id, error: .protocolError("lock id of another node"))) }
            if let refusal = overLimit(node: node, resource: resource, channel: channel) { return reply(channel, .refused(id, error: refusal)) }
            dispatch(table.request(id, owner: LockOwner(node: node, process: process), resource: resource, mode: mode,
                                   flags: flags, timeout: t == 0 ? nil : UInt64(t) * 1_000_000, epoch: epoch, now: now))
        case let .convert(id, mode, flags, t, vb, epoch):
            guard id.node == node else { return reply(channel, .refused(id, error: .protocolError("lock id of another node"))) }
            dispatch(table.convert(id, to: mode, flags: flags, timeout: t == 0 ? nil : UInt64(t) * 1_000_000,
                                   valueBlock: vb, epoch: epoch, now: now))
        case let .unlock(id, vb, epoch):
            guard id.node == node else { return reply(channel, .refused(id, error: .protocolError("lock id of another node"))) }
            dispatch(table.unlock(id, valueBlock: vb, epoch: epoch))
        case .cancel(let id):
            guard id.node == node else { return }
            dispatch(table.cancel(id))
        case let .recover(id, process, resource, mode, vb, epoch):
            guard id.node == node else { return }
            if let refusal = overLimit(node: node, resource: resource, channel: channel) { return reply(channel, .refused(id, error: refusal)) }
            if table.recovering {
                if let err = table.recover(id, owner: LockOwner(node: node, process: process), resource: resource, mode: mode,
                                           valueBlock: vb, epoch: epoch) {
                    reply(channel, .refused(id, error: err))
                }
            } else {
                resync[node, default: []].insert(id)
            }
        case .recoverDone(let epoch):
            guard epoch == table.epoch else { return reply(channel, .failure("stale epoch \(epoch), master is at \(table.epoch)")) }
            if table.recovering {
                recovered.insert(node)
                maybeEndRecovery()
            } else {
                // Same-epoch reconnect: drop locks the node no longer knows it holds (a grant lost
                // with the old connection), so nothing stays orphaned.
                let known = resync.removeValue(forKey: node) ?? []
                let orphans = table.locks(of: node).filter { $0.grantedMode != nil && !known.contains($0.id) }
                for l in orphans { dispatch(table.unlock(l.id, epoch: table.epoch)) }
            }
        case .list:
            // In frames of whole lines: a listing of any size fits.
            for frame in WireMessage.listingFrames(describeLines()) { reply(channel, frame) }
        default:
            logRefusal(kind: "error", address: channel.remoteAddress, "unexpected message \(msg.type)")
            channel.close(Refusal(.protocolError, "unexpected message \(msg.type)"))
        }
        scheduleTick()
        // Flushed by the caller once the whole read burst is handled.
    }

    /// Why a new lock of `node` on `resource` would pass its limits, if it would.
    private func overLimit(node: UInt32, resource: String, channel: TransportConnection) -> LockError? {
        let usage = table.usage(of: node)
        let why: String
        if resource.utf8.count > WireFormat.maxResourceName {
            why = "resource name of \(resource.utf8.count) bytes (limit \(WireFormat.maxResourceName))"
        } else if usage.locks >= limits.maxLocksPerNode {
            why = "node \(node) has \(usage.locks) locks (limit \(limits.maxLocksPerNode))"
        } else if usage.nameBytes + resource.utf8.count > limits.maxNameBytesPerNode {
            why = "node \(node) has \(usage.nameBytes) bytes of resource names (limit \(limits.maxNameBytesPerNode))"
        } else {
            return nil
        }
        logRefusal(kind: "lock limit of node \(node)", address: channel.remoteAddress, why)
        return .limitReached(why)
    }

    /// Recovery ends once every live member has re-sent its locks. A member that is alive but
    /// silent keeps it open until it speaks or is fenced (drops out of the membership).
    func membershipChanged(_ now: Set<UInt32>) {
        let gone = members.subtracting(now)
        members = now
        for node in gone.sorted() {
            // The coordination backend only drops a node once it is fenced, so purging is safe.
            logger.info("node \(node) left the membership; purging its locks")
            dispatch(table.purge(node: node))
            orphanedSince[node] = nil
        }
        purgeOrphans()
        maybeEndRecovery()
        scheduleTick()
        flush()
    }

    /// A node that is gone (no connection) and not a member cannot act on its locks once its
    /// fencing deadline has passed: they are purged then, so they do not stay forever.
    private func purgeOrphans() {
        guard !orphanedSince.isEmpty else { return }
        let now = monotonicNow()
        let grace = UInt64(limits.orphanGraceMillis) * 1_000_000
        for (node, since) in orphanedSince.sorted(by: { $0.key < $1.key }) {
            if members.contains(node) || connections[node] != nil {
                orphanedSince[node] = nil
            } else if now - since >= grace {
                orphanedSince[node] = nil
                logger.info("node \(node) disconnected \((now - since) / 1_000_000) ms ago and is not a member; purging its \(table.usage(of: node).locks) locks")
                dispatch(table.purge(node: node))
            }
        }
    }

    private func maybeEndRecovery() {
        guard table.recovering, !members.isEmpty, members.isSubset(of: recovered) else { return }
        let end = monotonicNow()
        recoveryEnded = end
        logger.info("recovery of epoch \(table.epoch) ended after \((end - recoveryStarted) / 1000) us")
        dispatch(table.endRecovery())
    }

    func tick() {
        tickTask = nil
        tickAt = nil
        dispatch(table.tick(now: monotonicNow()))
        scheduleTick()
        flush()
    }

    private func scheduleTick() {
        guard let next = table.nextDeadline() else { return }
        if let at = tickAt, at <= next { return }
        tickTask?.cancel()
        tickAt = next
        let now = monotonicNow()
        let delay = next > now ? Int64(next - now) : 0
        // The timer fires on this same loop; NIOLoopBound checks that and keeps the closure Sendable.
        let me = NIOLoopBound(self, eventLoop: loop)
        tickTask = loop.scheduleTask(in: .nanoseconds(delay)) { me.value.tick() }
    }

    func dispatch(_ directives: [LockDirective]) {
        for d in directives {
            let node: UInt32, msg: WireMessage
            switch d {
            case let .granted(id, owner, _, mode, vb): node = owner.node; msg = .granted(id, mode: mode, valueBlock: vb)
            case let .refused(id, owner, err): node = owner.node; msg = .refused(id, error: err)
            case let .blocking(id, owner, _, blocked): node = owner.node; msg = .blocking(id, blocked: blocked)
            case let .released(id, owner): node = owner.node; msg = .released(id)
            case let .demoted(id, owner, _): node = owner.node; msg = .demoted(id)
            }
            // A node without a connection learns its state when it reconnects and resyncs.
            guard let ch = connections[node] else { continue }
            send(msg, to: ch)
        }
    }

    private func reply(_ channel: TransportConnection, _ msg: WireMessage) {
        send(msg, to: channel)
    }

    private func send(_ msg: WireMessage, to ch: TransportConnection) {
        ch.send(msg, flush: false)
        if !unflushed.contains(where: { $0 === ch }) { unflushed.append(ch) }
    }

    /// Sends what was written since the last flush.
    func flush() {
        guard !unflushed.isEmpty else { return }
        for ch in unflushed { ch.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    func describe() -> String { describeLines().joined(separator: "\n") }

    func describeLines() -> [String] {
        var lines = ["epoch \(table.epoch)\(table.recovering ? " (recovering)" : "") members \(members.sorted())"]
        lines.reserveCapacity(table.lockCount + table.resourceNames.count + 1)
        for name in table.resourceNames.sorted() {
            let r = table.resource(name)!
            lines.append("resource \(name) \(r.valueBlock)")
            for id in r.granted { let l = table.lock(id)!; lines.append("  granted \(id) owner \(l.owner) \(l.grantedMode!)") }
            for id in r.converting { let l = table.lock(id)!; lines.append("  converting \(id) owner \(l.owner) \(l.grantedMode!)->\(l.requestedMode!)") }
            for id in r.waiting { let l = table.lock(id)!; lines.append("  waiting \(id) owner \(l.owner) \(l.requestedMode!)") }
        }
        return lines
    }
}
