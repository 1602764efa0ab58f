import NIOCore
import Logging

/// The lock master's shell around the pure `LockTable`: it owns the connections of the nodes and
/// carries out the table's directives. It lives on one event loop and is only touched there.
final class MasterCore {
    let loop: EventLoop
    let coordination: any CoordinationBackend
    let logger: Logger
    var table: LockTable
    /// The authenticated connection of each node (one per node; a newer one replaces an older one).
    var connections: [UInt32: Channel] = [:]
    /// Nodes that have re-sent their locks under the current epoch.
    var recovered: Set<UInt32> = []
    /// Locks a reconnecting node said it holds, until its `recoverDone` (same-epoch resync).
    var resync: [UInt32: Set<LockID>] = [:]
    var members: Set<UInt32> = []
    var tickTask: Scheduled<Void>?
    var tickAt: Instant?
    var recoveryStarted: Instant = monotonicNow()
    var recoveryEnded: Instant?
    /// Connections written to since the last flush. Replies are flushed once per read burst
    /// (`flush()` from the handler's channelReadComplete) and at the end of every other entry
    /// point: with many clients, one syscall carries several replies.
    private var unflushed: [Channel] = []

    init(loop: EventLoop, epoch: Epoch, coordination: any CoordinationBackend, logger: Logger) {
        self.loop = loop
        self.coordination = coordination
        self.logger = logger
        // A new master starts in recovery: nothing is granted until the survivors have re-sent.
        table = LockTable(epoch: epoch, recovering: true)
    }

    func authenticated(node: UInt32, channel: Channel) {
        if let old = connections[node], old !== channel { old.close(promise: nil) }
        // Whatever the node had queued on an older connection is void; it re-sends. The
        // refusals are not delivered (no connection is registered yet): the node does not wait
        // for them, and they must not reach the new session before its welcome.
        connections[node] = nil
        cancelPending(of: node)
        connections[node] = channel
        flush()
    }

    func disconnected(node: UInt32, channel: Channel) {
        guard connections[node] === channel else { return }
        connections[node] = nil
        cancelPending(of: node)
        flush()
    }

    private func cancelPending(of node: UInt32) {
        let pending = table.locks.values.filter { $0.owner.node == node && $0.requestedMode != nil }.map(\.id).sorted()
        for id in pending { dispatch(table.cancel(id)) }
    }

    func handle(_ msg: WireMessage, from node: UInt32, channel: Channel) {
        let now = monotonicNow()
        switch msg {
        case let .request(id, process, resource, mode, flags, t, epoch):
            guard id.node == node else { return reply(channel, .refused(id, error: .protocolError("lock id of another node"))) }
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
            reply(channel, .listing(describe()))
        default:
            channel.writeAndFlush(WireMessage.failure("unexpected message"), promise: nil)
            channel.close(promise: nil)
        }
        scheduleTick()
        // Flushed by the caller once the whole read burst is handled.
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
        }
        maybeEndRecovery()
        scheduleTick()
        flush()
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
        guard let next = table.nextDeadline else { return }
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

    private func reply(_ channel: Channel, _ msg: WireMessage) {
        send(msg, to: channel)
    }

    private func send(_ msg: WireMessage, to ch: Channel) {
        ch.write(msg, promise: nil)
        if !unflushed.contains(where: { $0 === ch }) { unflushed.append(ch) }
    }

    /// Sends what was written since the last flush.
    func flush() {
        guard !unflushed.isEmpty else { return }
        for ch in unflushed { ch.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    func describe() -> String {
        var lines = ["epoch \(table.epoch)\(table.recovering ? " (recovering)" : "") members \(members.sorted())"]
        for name in table.resources.keys.sorted() {
            let r = table.resources[name]!
            lines.append("resource \(name) \(r.valueBlock)")
            for id in r.granted { let l = table.lock(id)!; lines.append("  granted \(id) owner \(l.owner) \(l.grantedMode!)") }
            for id in r.converting { let l = table.lock(id)!; lines.append("  converting \(id) owner \(l.owner) \(l.grantedMode!)->\(l.requestedMode!)") }
            for id in r.waiting { let l = table.lock(id)!; lines.append("  waiting \(id) owner \(l.owner) \(l.requestedMode!)") }
        }
        return lines.joined(separator: "\n")
    }
}
