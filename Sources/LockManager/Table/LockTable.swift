/// The lock table of one lock master: a pure, deterministic state machine.
///
/// It does no I/O and reads no clock: the shell feeds it events (with the time) and carries out the
/// directives it returns. So any schedule of requests, node deaths and master changes can be replayed
/// exactly in a test.
public struct LockTable: Sendable {
    public struct Lock: Sendable, Hashable {
        public var id: LockID
        public var owner: LockOwner
        public var resource: String
        /// nil while the lock waits for its first grant.
        public var grantedMode: LockMode?
        /// Set while waiting (new request) or converting.
        public var requestedMode: LockMode?
        public var deadline: Instant?
        /// Order of arrival in a queue, for fairness.
        public var sequence: UInt64
        /// Mode the last blocking callback was sent for, to avoid repeating it.
        var bastSentFor: LockMode?
    }

    public struct Resource: Sendable {
        public var name: String
        public var granted: [LockID] = []
        public var converting: [LockID] = []
        public var waiting: [LockID] = []
        public var valueBlock = ValueBlock.empty
        var isEmpty: Bool { granted.isEmpty && converting.isEmpty && waiting.isEmpty }
    }

    public private(set) var epoch: Epoch
    /// While true, requests are queued but nothing new is granted (recovery after a master change).
    public private(set) var recovering: Bool
    public private(set) var resources: [String: Resource] = [:]
    public private(set) var locks: [LockID: Lock] = [:]
    private var nextSequence: UInt64 = 0

    public init(epoch: Epoch, recovering: Bool = false) {
        self.epoch = epoch
        self.recovering = recovering
    }

    // MARK: Requests

    /// A new lock request. `timeout` is relative to `now`; nil waits forever.
    public mutating func request(_ id: LockID, owner: LockOwner, resource name: String, mode: LockMode,
                                 flags: LockFlags = [], timeout: UInt64? = nil, epoch: Epoch,
                                 now: Instant) -> [LockDirective] {
        if epoch != self.epoch { return [.refused(id, owner: owner, error: .staleEpoch(current: self.epoch))] }
        if locks[id] != nil { return [.refused(id, owner: owner, error: .duplicateLock)] }
        var res = resources[name] ?? Resource(name: name)
        let lock = Lock(id: id, owner: owner, resource: name, grantedMode: nil, requestedMode: mode,
                        deadline: timeout.map { now &+ $0 }, sequence: takeSequence())
        // A new request is granted at once only if nobody is queued before it (fairness) and it is
        // compatible with every granted lock.
        let immediate = !recovering && res.converting.isEmpty && res.waiting.isEmpty
            && compatibleWithGranted(mode, in: res, except: nil)
        if immediate {
            var l = lock
            l.grantedMode = mode
            l.requestedMode = nil
            l.deadline = nil
            locks[id] = l
            res.granted.append(id)
            resources[name] = res
            return [.granted(id, owner: owner, resource: name, mode: mode, valueBlock: res.valueBlock)]
        }
        if flags.contains(.noQueue) && !recovering {
            return [.refused(id, owner: owner, error: .wouldBlock)]
        }
        locks[id] = lock
        res.waiting.append(id)
        resources[name] = res
        if !recovering, wouldDeadlock(id) {
            removeFromQueues(id)
            return [.refused(id, owner: owner, error: .deadlock)]
        }
        return recovering ? [] : blockingCallbacks(for: name)
    }

    /// Convert a granted lock to another mode. Down-converting from PW/EX may write the value block.
    public mutating func convert(_ id: LockID, to mode: LockMode, flags: LockFlags = [], timeout: UInt64? = nil,
                                 valueBlock: [UInt8]? = nil, epoch: Epoch, now: Instant) -> [LockDirective] {
        guard var lock = locks[id] else { return [.refused(id, owner: LockOwner(node: id.node, process: 0), error: .unknownLock)] }
        if epoch != self.epoch { return [.refused(id, owner: lock.owner, error: .staleEpoch(current: self.epoch))] }
        guard let current = lock.grantedMode, lock.requestedMode == nil else {
            return [.refused(id, owner: lock.owner, error: .notGranted)]
        }
        var res = resources[lock.resource]!
        if current.writesValueBlock, let vb = valueBlock { res.valueBlock = ValueBlock(bytes: vb) }
        resources[lock.resource] = res
        // A conversion compatible with the other granted locks is granted at once, even past queued
        // conversions (as Linux does): it can only make the lock weaker or equal for the others.
        if !recovering && compatibleWithGranted(mode, in: res, except: id) {
            lock.grantedMode = mode
            lock.bastSentFor = nil
            locks[id] = lock
            var out: [LockDirective] = [.granted(id, owner: lock.owner, resource: lock.resource, mode: mode,
                                                 valueBlock: res.valueBlock)]
            out += grantPending(lock.resource)
            return out
        }
        if flags.contains(.noQueue) && !recovering { return [.refused(id, owner: lock.owner, error: .wouldBlock)] }
        lock.requestedMode = mode
        lock.deadline = timeout.map { now &+ $0 }
        lock.sequence = takeSequence()
        locks[id] = lock
        resources[lock.resource]!.converting.append(id)
        if !recovering, wouldDeadlock(id) {
            // CONVDEADLK (as in Linux): give up the granted mode (down to NL) rather than the
            // conversion, if that breaks the cycle; what waited on this holder may then go ahead.
            if flags.contains(.convDeadlock), current != .nl {
                locks[id]!.grantedMode = .nl
                locks[id]!.bastSentFor = nil
                if !wouldDeadlock(id) {
                    return [.demoted(id, owner: lock.owner, resource: lock.resource)] + grantPending(lock.resource)
                }
                locks[id]!.grantedMode = current
            }
            abortRequest(id)
            return [.refused(id, owner: lock.owner, error: .deadlock)]
        }
        return recovering ? [] : blockingCallbacks(for: lock.resource)
    }

    /// Release a granted lock. A PW/EX holder may write the value block as it goes.
    public mutating func unlock(_ id: LockID, valueBlock: [UInt8]? = nil, epoch: Epoch) -> [LockDirective] {
        guard let lock = locks[id] else { return [.refused(id, owner: LockOwner(node: id.node, process: 0), error: .unknownLock)] }
        if epoch != self.epoch { return [.refused(id, owner: lock.owner, error: .staleEpoch(current: self.epoch))] }
        guard let mode = lock.grantedMode, lock.requestedMode == nil else {
            return [.refused(id, owner: lock.owner, error: .notGranted)]
        }
        if mode.writesValueBlock, let vb = valueBlock { resources[lock.resource]!.valueBlock = ValueBlock(bytes: vb) }
        removeFromQueues(id)
        return [.released(id, owner: lock.owner)] + grantPending(lock.resource)
    }

    /// Cancel a waiting request or a pending conversion (a conversion falls back to its granted mode).
    public mutating func cancel(_ id: LockID) -> [LockDirective] {
        endRequest(id, with: .cancelled)
    }

    /// Expire the requests whose deadline has passed.
    public mutating func tick(now: Instant) -> [LockDirective] {
        let expired = locks.values.filter { $0.requestedMode != nil && ($0.deadline.map { $0 <= now } ?? false) }
            .sorted { $0.sequence < $1.sequence }
        var out: [LockDirective] = []
        for l in expired { out += endRequest(l.id, with: .timedOut) }
        return out
    }

    /// The earliest deadline of any queued request, so the shell knows when to call `tick`.
    public var nextDeadline: Instant? {
        locks.values.compactMap { $0.requestedMode != nil ? $0.deadline : nil }.min()
    }

    // MARK: Membership and recovery

    /// Drop every lock of a node. Call only once the node is fenced: it can no longer act on them.
    /// A PW/EX holder that died may have changed what the value block describes, so it becomes invalid.
    public mutating func purge(node: UInt32) -> [LockDirective] {
        purge { $0.node == node }
    }

    /// Drop every lock of one process on a node (the process exited).
    public mutating func purge(owner: LockOwner) -> [LockDirective] {
        purge { $0 == owner }
    }

    private mutating func purge(where match: (LockOwner) -> Bool) -> [LockDirective] {
        let victims = locks.values.filter { match($0.owner) }.sorted { $0.sequence < $1.sequence }
        var touched = Set<String>()
        // Pending requests of the purged owner end here, so that every request has an outcome.
        var out: [LockDirective] = victims.filter { $0.requestedMode != nil }
            .map { .refused($0.id, owner: $0.owner, error: .fenced) }
        for l in victims {
            if let g = l.grantedMode, g.writesValueBlock { resources[l.resource]!.valueBlock.valid = false }
            removeFromQueues(l.id)
            touched.insert(l.resource)
        }
        guard !recovering else { return out }
        out += touched.sorted().flatMap { grantPending($0) }
        return out
    }

    /// Start recovery under a new epoch: the table is emptied and nothing is granted until
    /// `endRecovery`. Survivors re-send their granted locks with `recover`.
    public mutating func beginRecovery(epoch: Epoch) {
        precondition(epoch > self.epoch, "a new master's epoch must be higher")
        self.epoch = epoch
        recovering = true
        resources = [:]
        locks = [:]
        recoveredValueBlocks = [:]
    }

    private var recoveredValueBlocks: [String: [(LockMode, ValueBlock)]] = [:]

    /// A survivor re-sends a lock it holds, with the value block it last saw.
    public mutating func recover(_ id: LockID, owner: LockOwner, resource name: String, mode: LockMode,
                                 valueBlock: ValueBlock, epoch: Epoch) -> LockError? {
        guard recovering else { return .notGranted }
        if epoch != self.epoch { return .staleEpoch(current: self.epoch) }
        if let known = locks[id] {
            // A node that reconnects during recovery re-sends the same locks: idempotent.
            let same = known.owner == owner && known.resource == name && known.grantedMode == mode
            return same ? nil : .duplicateLock
        }
        var res = resources[name] ?? Resource(name: name)
        // Survivors' locks were compatible under the old master; refuse anything that is not, rather
        // than grant two incompatible modes.
        guard compatibleWithGranted(mode, in: res, except: nil) else { return .notGranted }
        locks[id] = Lock(id: id, owner: owner, resource: name, grantedMode: mode, requestedMode: nil,
                         deadline: nil, sequence: takeSequence())
        res.granted.append(id)
        resources[name] = res
        recoveredValueBlocks[name, default: []].append((mode, valueBlock))
        return nil
    }

    /// End recovery: settle value blocks by the standard rule, then serve queued requests.
    /// A surviving lock above CR carries the current value block (no PW/EX could have been granted
    /// beside a CW/PR holder without it seeing the write); otherwise a dead PW/EX holder may have
    /// changed it, so it is marked not valid.
    public mutating func endRecovery() -> [LockDirective] {
        for (name, seen) in recoveredValueBlocks {
            let strongest = seen.filter { $0.0 > .cr }.max { $0.0 < $1.0 }
            resources[name]!.valueBlock = strongest.map { $0.1 } ?? ValueBlock(bytes: [], valid: false)
        }
        recoveredValueBlocks = [:]
        recovering = false
        return resources.keys.sorted().flatMap { grantPending($0) }
    }

    // MARK: Queries

    public func lock(_ id: LockID) -> Lock? { locks[id] }

    public func locks(of node: UInt32) -> [Lock] {
        locks.values.filter { $0.owner.node == node }.sorted { $0.id < $1.id }
    }

    // MARK: Internals

    private mutating func takeSequence() -> UInt64 {
        nextSequence += 1
        return nextSequence
    }

    private func compatibleWithGranted(_ mode: LockMode, in res: Resource, except: LockID?) -> Bool {
        res.granted.allSatisfy { gid in
            gid == except || locks[gid]!.grantedMode!.isCompatible(with: mode)
        }
    }

    /// Ends a pending request (wait or convert) without a grant.
    private mutating func endRequest(_ id: LockID, with error: LockError) -> [LockDirective] {
        guard let lock = locks[id] else { return [.refused(id, owner: LockOwner(node: id.node, process: 0), error: .unknownLock)] }
        guard lock.requestedMode != nil else { return [.refused(id, owner: lock.owner, error: .notGranted)] }
        abortRequest(id)
        return [.refused(id, owner: lock.owner, error: error)] + grantPending(lock.resource)
    }

    /// Take a request out of its queue: a waiter disappears, a conversion returns to its granted mode.
    private mutating func abortRequest(_ id: LockID) {
        guard var lock = locks[id] else { return }
        if lock.grantedMode == nil {
            removeFromQueues(id)
        } else {
            resources[lock.resource]!.converting.removeAll { $0 == id }
            lock.requestedMode = nil
            lock.deadline = nil
            locks[id] = lock
        }
    }

    private mutating func removeFromQueues(_ id: LockID) {
        guard let lock = locks.removeValue(forKey: id) else { return }
        var res = resources[lock.resource]!
        res.granted.removeAll { $0 == id }
        res.converting.removeAll { $0 == id }
        res.waiting.removeAll { $0 == id }
        // Keep a resource while it has a valid or invalid value block worth remembering? The value
        // block lives with the resource; an idle resource with an empty valid block is dropped.
        if res.isEmpty && res.valueBlock == .empty { resources[lock.resource] = nil } else { resources[lock.resource] = res }
    }

    /// Serve queued requests: conversions first (any that fit, in order), then new requests strictly
    /// in order and only once no conversion waits. Then send blocking callbacks for what still waits.
    private mutating func grantPending(_ name: String) -> [LockDirective] {
        guard !recovering, var res = resources[name] else { return [] }
        var out: [LockDirective] = []
        var progress = true
        while progress {
            progress = false
            for cid in res.converting {
                var l = locks[cid]!
                guard compatibleWithGranted(l.requestedMode!, in: res, except: cid) else { continue }
                l.grantedMode = l.requestedMode
                l.requestedMode = nil
                l.deadline = nil
                l.bastSentFor = nil
                locks[cid] = l
                res.converting.removeAll { $0 == cid }
                out.append(.granted(cid, owner: l.owner, resource: name, mode: l.grantedMode!, valueBlock: res.valueBlock))
                progress = true
                break
            }
        }
        while res.converting.isEmpty, let wid = res.waiting.first {
            var l = locks[wid]!
            guard compatibleWithGranted(l.requestedMode!, in: res, except: nil) else { break }
            l.grantedMode = l.requestedMode
            l.requestedMode = nil
            l.deadline = nil
            locks[wid] = l
            res.waiting.removeFirst()
            res.granted.append(wid)
            out.append(.granted(wid, owner: l.owner, resource: name, mode: l.grantedMode!, valueBlock: res.valueBlock))
        }
        resources[name] = res
        if res.isEmpty && res.valueBlock == .empty { resources[name] = nil }
        return out + blockingCallbacks(for: name)
    }

    /// Blocking callbacks go to granted holders that conflict with the first blocked request.
    private mutating func blockingCallbacks(for name: String) -> [LockDirective] {
        guard !recovering, let res = resources[name] else { return [] }
        guard let first = res.converting.first ?? res.waiting.first, let wanted = locks[first]!.requestedMode else { return [] }
        var out: [LockDirective] = []
        for gid in res.granted where gid != first {
            var g = locks[gid]!
            guard !g.grantedMode!.isCompatible(with: wanted), g.bastSentFor != wanted else { continue }
            g.bastSentFor = wanted
            locks[gid] = g
            out.append(.blocking(gid, owner: g.owner, resource: name, blocked: wanted))
        }
        return out
    }

    // MARK: Deadlock detection

    /// Owners that a queued request waits for: holders of conflicting granted locks, and owners of
    /// conflicting requests queued ahead of it (they will be served first).
    private func blockers(of id: LockID) -> Set<LockOwner> {
        guard let l = locks[id], let want = l.requestedMode, let res = resources[l.resource] else { return [] }
        var out = Set<LockOwner>()
        for gid in res.granted where gid != id {
            let g = locks[gid]!
            if !g.grantedMode!.isCompatible(with: want) { out.insert(g.owner) }
        }
        let queue = l.grantedMode == nil ? res.converting + res.waiting : res.converting
        for qid in queue {
            if qid == id { break }
            let q = locks[qid]!
            if !q.requestedMode!.isCompatible(with: want) { out.insert(q.owner) }
        }
        return out
    }

    /// True if the owner of `id`, now waiting, waits (transitively) for itself.
    private func wouldDeadlock(_ id: LockID) -> Bool {
        guard let start = locks[id]?.owner else { return false }
        // Edges owner -> owners it waits for, over every queued request.
        var edges: [LockOwner: Set<LockOwner>] = [:]
        for l in locks.values where l.requestedMode != nil {
            edges[l.owner, default: []].formUnion(blockers(of: l.id))
        }
        var seen = Set<LockOwner>()
        var stack = Array(blockers(of: id))
        while let o = stack.popLast() {
            if o == start { return true }
            if seen.insert(o).inserted { stack.append(contentsOf: edges[o] ?? []) }
        }
        return false
    }
}
