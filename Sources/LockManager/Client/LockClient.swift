import ClusterTransport
import NIOCore
import NIOPosix
import Logging

/// A lock the caller holds.
public struct LockHandle: Hashable, Sendable, CustomStringConvertible {
    public let id: LockID
    public let resource: String
    public var description: String { "\(resource)#\(id)" }
}

/// The node side of the DLM, what the filesystem calls: it finds the master through the
/// coordination backend, authenticates, reconnects, re-sends its locks to a new master
/// (recovery), and fences itself when the backend says its lease lapsed.
public final class LockClient: Sendable {
    public typealias BlockingHandler = @Sendable (LockHandle, LockMode) -> Void

    struct Held {
        var resource: String; var process: UInt32; var mode: LockMode; var valueBlock: ValueBlock
        /// Demoted to NL by CONVDEADLK during the last conversion.
        var demoted = false
    }
    enum Op {
        case request(process: UInt32, resource: String, mode: LockMode, flags: LockFlags, timeoutMillis: UInt32)
        case convert(mode: LockMode, flags: LockFlags, timeoutMillis: UInt32, valueBlock: [UInt8]?)
        case unlock(valueBlock: [UInt8]?)
    }
    struct Pending {
        var op: Op
        var continuation: CheckedContinuation<ValueBlock, Error>
        /// Client-side deadline: the request's own timeout plus a grace.
        var deadline: Instant?
    }
    struct State {
        var channel: TransportConnection?
        var epoch: Epoch?
        var serial: UInt64 = 0
        var held: [LockID: Held] = [:]
        var pending: [LockID: Pending] = [:]
        var listings: [CheckedContinuation<String, Error>] = []
        /// The frames of the listing being received (they come in order on one connection).
        var listingText = ""
        var fenced = false
        var stopped = false
        var sessions = 0
        var blocking: BlockingHandler?
        var fencedHandler: (@Sendable () -> Void)?
        /// Why the master refused this node at its last attempt, if it did (a wrong secret or volume).
        var refusal: TransportError?
    }

    public let node: UInt32
    let coordination: any CoordinationBackend
    let secret: ClusterSecret
    /// The volume this node serves: a master of another volume is refused (and refuses us).
    let volume: String
    let group: EventLoopGroup
    /// Every connection of this client lives on this one loop, so callers can run on it too.
    public let eventLoop: EventLoop
    /// Runs a caller's task on the connection's event loop (see `EventLoopTaskExecutor`): the
    /// fastest way to call this client from code that does not block.
    public let executor: EventLoopTaskExecutor
    let logger: Logger
    let state = Locked(State())
    let metrics = LockClientMetrics()
    private let tasks = Locked<[Task<Void, Never>]>([])

    public init(coordination: any CoordinationBackend, secret: ClusterSecret, volume: String = "", group: EventLoopGroup,
                logger: Logger = Logger(label: "dlm.client")) {
        // Lock ids start at a random point, so a restarted node does not reuse the ids of its
        // previous incarnation if the master has not yet purged them.
        state.withLock { $0.serial = UInt64.random(in: 0..<(1 << 40)) << 16 }
        node = coordination.node
        self.coordination = coordination
        self.secret = secret
        self.volume = volume
        self.group = group
        eventLoop = group.next()
        executor = EventLoopTaskExecutor(eventLoop)
        self.logger = logger
    }

    /// The connection to the master once it has welcomed this node, nil between masters. The node's other
    /// services share it: the metadata RPC goes to the coordinator, which hosts the master.
    public var connection: TransportConnection? { state.withLock { $0.channel } }

    /// Why the master refused this node the last time it tried (a wrong secret, another volume); nil once a
    /// master has welcomed it.
    public var refusal: TransportError? { state.withLock { $0.refusal } }

    /// Starts the connection loop and the fencing watchdog.
    public func start() {
        let conn = Task { await connectionLoop() }
        let watchdog = Task {
            while !Task.isCancelled {
                if coordination.isFenced() { fence(); return }
                expireOverdue(now: monotonicNow())
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }
        let events = coordination.events()
        let masterWatch = Task { [self] in
            for await event in events {
                switch event {
                case .leaderChanged(let leader?), .gainedLeadership(let leader): leaveOlderMaster(for: leader)
                default: break
                }
            }
        }
        tasks.withLock { $0 += [conn, watchdog, masterWatch] }
    }

    /// A new master was elected while this node is still connected to the old one: a master cut off by a
    /// partition never closes its end (no reset comes back), so the connection is closed here and the loop
    /// finds the new one, instead of waiting for TCP to give up.
    private func leaveOlderMaster(for leader: Leadership) {
        let stale = state.withLock { s -> TransportConnection? in
            guard let epoch = s.epoch, leader.epoch > epoch else { return nil }
            return s.channel
        }
        if let stale {
            logger.info("node \(node): master of epoch \(leader.epoch) elected, leaving the connection to the older one")
            stale.close()
        }
    }

    public func stop() async {
        let (ch, pend) = state.withLock { s -> (TransportConnection?, [Pending]) in
            s.stopped = true
            let p = Array(s.pending.values)
            s.pending = [:]
            return (s.channel, p)
        }
        for p in pend { p.continuation.resume(throwing: LockError.disconnected) }
        for t in tasks.withLock({ $0 }) { t.cancel() }
        ch?.close()
        try? await ch?.channel.closeFuture.get()
    }

    /// How many authenticated sessions with a master this client has had (reconnects + 1).
    public var sessions: Int { state.withLock { $0.sessions } }

    /// The epoch of the master this client speaks to (nil before the first welcome).
    public var epoch: Epoch? { state.withLock { $0.epoch } }

    /// Called when a holder blocks a waiter: flush caches and down-convert or unlock.
    public func onBlocking(_ handler: @escaping BlockingHandler) { state.withLock { $0.blocking = handler } }

    /// `handler` runs once, when this node fences itself: every lock it held is gone, and so is what they protected.
    public func onFenced(_ handler: @escaping @Sendable () -> Void) { state.withLock { $0.fencedHandler = handler } }

    /// True while the lock is granted and this node is not fenced. Check it before acting on the
    /// protected resource: after a lease lapse it turns false before anyone else can be granted.
    public func isHeld(_ h: LockHandle) -> Bool {
        if coordination.isFenced() { fence(); return false }
        return state.withLock { !$0.fenced && $0.held[h.id] != nil }
    }

    public func mode(of h: LockHandle) -> LockMode? { state.withLock { $0.held[h.id]?.mode } }

    /// True if, during its last conversion (asked with `.convDeadlock`), the lock was demoted to NL
    /// to break a conversion deadlock: others may have held it in between, so what the old mode
    /// protected (cached data) must be read again.
    public func wasDemoted(_ h: LockHandle) -> Bool { state.withLock { $0.held[h.id]?.demoted ?? false } }

    // MARK: Operations

    /// Acquire `resource` in `mode`. `timeout` bounds the wait at the master (nil: wait until granted).
    public func lock(_ resource: String, mode: LockMode, flags: LockFlags = [], timeout: Duration? = nil,
                     process: UInt32 = 0) async throws -> (LockHandle, ValueBlock) {
        guard resource.utf8.count <= WireFormat.maxResourceName else {
            throw LockError.protocolError("resource name of \(resource.utf8.count) bytes (limit \(WireFormat.maxResourceName))")
        }
        let id = state.withLock { s -> LockID in
            s.serial += 1
            return LockID(node: node, serial: s.serial)
        }
        let started = monotonicNow()
        let vb = try await perform(id, .request(process: process, resource: resource, mode: mode, flags: flags,
                                                timeoutMillis: Self.millis(timeout)))
        metrics.lockWait.recordNanoseconds(Int64(monotonicNow() - started))
        return (LockHandle(id: id, resource: resource), vb)
    }

    /// Convert a held lock. Down-converting from PW/EX writes `valueBlock` if given.
    @discardableResult
    public func convert(_ h: LockHandle, to mode: LockMode, flags: LockFlags = [], timeout: Duration? = nil,
                        valueBlock: [UInt8]? = nil) async throws -> ValueBlock {
        try Self.checkValueBlock(valueBlock)
        state.withLock { $0.held[h.id]?.demoted = false }
        return try await perform(h.id, .convert(mode: mode, flags: flags, timeoutMillis: Self.millis(timeout), valueBlock: valueBlock))
    }

    /// Release a held lock; a PW/EX holder may write the value block as it goes.
    public func unlock(_ h: LockHandle, valueBlock: [UInt8]? = nil) async throws {
        try Self.checkValueBlock(valueBlock)
        _ = try await perform(h.id, .unlock(valueBlock: valueBlock))
    }

    private static func checkValueBlock(_ vb: [UInt8]?) throws {
        guard let vb, vb.count > ValueBlock.maxSize else { return }
        throw LockError.protocolError("value block of \(vb.count) bytes (limit \(ValueBlock.maxSize))")
    }

    /// Cancel a waiting request or conversion; the waiting call throws `LockError.cancelled`.
    public func cancel(_ id: LockID) {
        let (ch, e) = state.withLock { ($0.channel, $0.epoch) }
        guard let ch, e != nil else { return }
        ch.send(WireMessage.cancel(id))
    }

    /// The master's view of resources, queues and holders.
    public func listing(timeout: Duration = .seconds(5)) async throws -> String {
        // Queued until a session exists, sent at once otherwise; failed by a bad secret.
        let deadline = monotonicNow() + UInt64(timeout.components.seconds) * 1_000_000_000
        let ask = Task {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<String, Error>) in
                let ch = state.withLock { s -> TransportConnection? in
                    s.listings.append(c)
                    return s.channel
                }
                ch?.send(WireMessage.list)
            }
        }
        // Every wait has a limit: a listing not answered in time fails.
        let limit = Task {
            while monotonicNow() < deadline, !Task.isCancelled { try? await Task.sleep(nanoseconds: 10_000_000) }
            guard !Task.isCancelled else { return }
            let stale = state.withLock { s in let l = s.listings; s.listings = []; return l }
            for c in stale { c.resume(throwing: LockError.disconnected) }
        }
        defer { limit.cancel() }
        return try await ask.value
    }

    static func millis(_ d: Duration?) -> UInt32 {
        guard let d else { return 0 }
        let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        return UInt32(clamping: max(1, ms))
    }

    /// Extra time the client allows past a request's own timeout before it gives up on a master
    /// that does not answer (unreachable, or failing over).
    static let clientGrace: UInt64 = 2_000_000_000

    private func perform(_ id: LockID, _ op: Op) async throws -> ValueBlock {
        if coordination.isFenced() { fence() }
        // Every request with a timeout also has a client-side deadline, so a silent master cannot
        // hang the caller; unlocks have none (they are retried until a master takes them).
        var millis: UInt32 = 0
        switch op {
        case let .request(_, _, _, _, t), let .convert(_, _, t, _): millis = t
        case .unlock: break
        }
        let deadline = millis > 0 ? monotonicNow() + UInt64(millis) * 1_000_000 + Self.clientGrace : nil
        return try await sendCancellable(id, op, deadline: deadline)
    }

    /// Cancelling the calling task cancels a waiting request or conversion at the master.
    private func sendCancellable(_ id: LockID, _ op: Op, deadline: Instant?) async throws -> ValueBlock {
        if case .unlock = op { return try await send(id, op, deadline: nil) }
        return try await withTaskCancellationHandler {
            try await send(id, op, deadline: deadline)
        } onCancel: {
            self.cancel(id)
        }
    }

    /// Called by the watchdog: fail the requests whose client-side deadline has passed.
    func expireOverdue(now: Instant) {
        let overdue = state.withLock { s in s.pending.filter { ($0.value.deadline ?? .max) <= now }.map(\.key) }
        for id in overdue { expire(id) }
    }

    /// The client-side deadline passed: the caller gets `.timedOut`, the master a cancel.
    private func expire(_ id: LockID) {
        guard let p = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
        p.continuation.resume(throwing: LockError.timedOut)
        cancel(id)
    }

    private func send(_ id: LockID, _ op: Op, deadline: Instant?) async throws -> ValueBlock {
        return try await withCheckedThrowingContinuation { c in
            let result = state.withLock { s -> (TransportConnection, Epoch)?? in
                if s.fenced { return .some(nil) }
                if s.stopped { return .some(nil) }
                if s.pending[id] != nil { return .some(nil) }
                s.pending[id] = Pending(op: op, continuation: c, deadline: deadline)
                if let ch = s.channel, let e = s.epoch { return (ch, e) }
                return nil   // sent on (re)connection
            }
            switch result {
            case .some(nil):
                let err: LockError = state.withLock { $0.fenced } ? .fenced : (state.withLock { $0.stopped } ? .disconnected : .notGranted)
                c.resume(throwing: err)
            case .some(.some(let (ch, e))):
                ch.send(Self.wire(id, op, epoch: e))
            case .none:
                break
            }
        }
    }

    static func wire(_ id: LockID, _ op: Op, epoch: Epoch) -> WireMessage {
        switch op {
        case let .request(p, r, m, f, t): .request(id, process: p, resource: r, mode: m, flags: f, timeoutMillis: t, epoch: epoch)
        case let .convert(m, f, t, vb): .convert(id, mode: m, flags: f, timeoutMillis: t, valueBlock: vb, epoch: epoch)
        case let .unlock(vb): .unlock(id, valueBlock: vb, epoch: epoch)
        }
    }

    // MARK: Fencing

    /// The lease lapsed: every lock is gone for this node, and it takes no more.
    func fence() {
        let fenced = state.withLock { s -> ([Pending], (@Sendable () -> Void)?)? in
            guard !s.fenced else { return nil }
            s.fenced = true
            s.held = [:]
            let p = Array(s.pending.values)
            s.pending = [:]
            return (p, s.fencedHandler)
        }
        guard let (pend, handler) = fenced else { return }
        logger.warning("node \(node) fenced itself: lease lapsed")
        handler?()
        for p in pend { p.continuation.resume(throwing: LockError.fenced) }
        if let ch = state.withLock({ $0.channel }) { ch.close() }
    }

    public var isFenced: Bool { state.withLock { $0.fenced } }

    // MARK: Incoming

    func received(_ msg: WireMessage) {
        switch msg {
        case let .granted(id, mode, vb):
            let (c, orphan) = state.withLock { s -> (CheckedContinuation<ValueBlock, Error>?, Bool) in
                guard let p = s.pending.removeValue(forKey: id) else {
                    // A grant for a request we gave up on: a new lock is given back at once;
                    // a conversion is taken as it is (the master's view is the truth).
                    if s.held[id] != nil { s.held[id]!.mode = mode; s.held[id]!.valueBlock = vb }
                    return (nil, s.held[id] == nil)
                }
                switch p.op {
                case let .request(process, resource, _, _, _):
                    s.held[id] = Held(resource: resource, process: process, mode: mode, valueBlock: vb)
                case .convert:
                    s.held[id]?.mode = mode
                    s.held[id]?.valueBlock = vb
                case .unlock:
                    break
                }
                return (p.continuation, false)
            }
            c?.resume(returning: vb)
            if orphan, let (ch, e) = state.withLock({ s in s.channel.map { ($0, s.epoch ?? 0) } }) {
                ch.send(WireMessage.unlock(id, valueBlock: nil, epoch: e))
            }
        case let .released(id):
            let c = state.withLock { s in
                s.held[id] = nil
                return s.pending.removeValue(forKey: id)?.continuation
            }
            c?.resume(returning: .empty)
        case let .refused(id, err):
            let (c, alreadyReleased) = state.withLock { s -> (CheckedContinuation<ValueBlock, Error>?, Bool) in
                guard let p = s.pending.removeValue(forKey: id) else {
                    // A refusal with no request: the new master refused a lock we re-sent in
                    // recovery. We no longer hold it.
                    s.held[id] = nil
                    return (nil, false)
                }
                if case .unlock = p.op, err == .unknownLock {
                    // Released already (the reply was lost with an old connection): done.
                    s.held[id] = nil
                    return (p.continuation, true)
                }
                return (p.continuation, false)
            }
            if alreadyReleased { c?.resume(returning: .empty) } else { c?.resume(throwing: err) }
        case let .blocking(id, blocked):
            metrics.blockingCallbacks.increment()
            let (h, handler) = state.withLock { s in (s.held[id].map { LockHandle(id: id, resource: $0.resource) }, s.blocking) }
            if let h, let handler { handler(h, blocked) }
        case .demoted(let id):
            // Arrives before the conversion's own grant or refusal, on the same connection.
            state.withLock { s in
                s.held[id]?.mode = .nl
                s.held[id]?.demoted = true
            }
        case let .listing(text, more):
            let done = state.withLock { s -> (CheckedContinuation<String, Error>, String)? in
                s.listingText += text
                guard !more else { return nil }
                var whole = s.listingText
                s.listingText = ""
                if whole.hasSuffix("\n") { whole.removeLast() }
                return s.listings.isEmpty ? nil : (s.listings.removeFirst(), whole)
            }
            if let (c, whole) = done { c.resume(returning: whole) }
        case .failure(let text):
            logger.warning("master says: \(text)")
        default:
            break
        }
    }
}
