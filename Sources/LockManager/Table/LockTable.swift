/// The lock table of one lock master: a pure, deterministic state machine.
///
/// It does no I/O and reads no clock: the shell feeds it events (with the time) and carries out the
/// directives it returns. So any schedule of requests, node deaths and master changes can be replayed
/// exactly in a test.
///
/// Sized for a cluster (a lock per cached inode on every node, a million locks and more): no event
/// looks at every lock. Deadlines are in a heap (`DeadlineQueue`); deadlock detection follows the
/// waits-for graph from the queued requests of each owner (kept as requests queue and end), so it
/// visits only the owners that wait; per-node counts are kept for the master's limits. Resources
/// live in a slab indexed by name, so a lock names its resource with 4 bytes.
public struct LockTable: Sendable {
    /// A lock as the queries return it.
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
    }

    public struct Resource: Sendable {
        public var name: String
        public var granted: [LockID] = []
        public var converting: [LockID] = []
        public var waiting: [LockID] = []
        public var valueBlock = ValueBlock.empty
        var isEmpty: Bool { granted.isEmpty && converting.isEmpty && waiting.isEmpty }
        var isIdle: Bool { isEmpty && valueBlock == .empty }
    }

    /// What a node holds or waits for, for the master's per-node limits.
    public struct NodeUsage: Sendable, Hashable {
        public var locks = 0
        public var nameBytes = 0
    }

    /// A lock as stored: 32 bytes (the id is the dictionary key, the resource a slot number).
    struct StoredLock: Sendable {
        var owner: LockOwner
        var sequence: UInt64
        /// `noDeadline` when the request waits forever (or nothing waits).
        var deadline: Instant
        var slot: UInt32
        var grantedMode: LockMode?
        var requestedMode: LockMode?
        /// Mode the last blocking callback was sent for, to avoid repeating it.
        var bastSentFor: LockMode?
    }
    static let noDeadline = Instant.max

    public private(set) var epoch: Epoch
    /// While true, requests are queued but nothing new is granted (recovery after a master change).
    public private(set) var recovering: Bool
    private var locks: [LockID: StoredLock] = [:]
    private var slots: ContiguousArray<Resource> = []
    private var freeSlots: [UInt32] = []
    private var slotOf: [String: UInt32] = [:]
    /// Queued requests (waiting or converting) per owner: the nodes of the waits-for graph.
    private var queuedByOwner: [LockOwner: Set<LockID>] = [:]
    private var queuedCount = 0
    private var deadlines = DeadlineQueue()
    private var usageByNode: [UInt32: NodeUsage] = [:]
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
        let slot = slotFor(name)
        let s = Int(slot)
        // A new request is granted at once only if nobody is queued before it (fairness) and it is
        // compatible with every granted lock.
        let immediate = !recovering && slots[s].converting.isEmpty && slots[s].waiting.isEmpty
            && compatibleWithGranted(mode, in: slot, except: nil)
        if immediate {
            insert(id, StoredLock(owner: owner, sequence: takeSequence(), deadline: Self.noDeadline, slot: slot,
                                  grantedMode: mode, requestedMode: nil), name: name)
            slots[s].granted.append(id)
            return [.granted(id, owner: owner, resource: name, mode: mode, valueBlock: slots[s].valueBlock)]
        }
        if flags.contains(.noQueue) && !recovering {
            dropIfIdle(slot)
            return [.refused(id, owner: owner, error: .wouldBlock)]
        }
        insert(id, StoredLock(owner: owner, sequence: takeSequence(), deadline: Self.noDeadline, slot: slot,
                              grantedMode: nil, requestedMode: mode), name: name)
        slots[s].waiting.append(id)
        queue(id, deadline: timeout.map { now &+ $0 })
        if !recovering, wouldDeadlock(id) {
            removeLock(id)
            return [.refused(id, owner: owner, error: .deadlock)]
        }
        return recovering ? [] : blockingCallbacks(for: slot)
    }

    /// Convert a granted lock to another mode. Down-converting from PW/EX may write the value block.
    public mutating func convert(_ id: LockID, to mode: LockMode, flags: LockFlags = [], timeout: UInt64? = nil,
                                 valueBlock: [UInt8]? = nil, epoch: Epoch, now: Instant) -> [LockDirective] {
        guard let lock = locks[id] else { return [.refused(id, owner: LockOwner(node: id.node, process: 0), error: .unknownLock)] }
        if epoch != self.epoch { return [.refused(id, owner: lock.owner, error: .staleEpoch(current: self.epoch))] }
        guard let current = lock.grantedMode, lock.requestedMode == nil else {
            return [.refused(id, owner: lock.owner, error: .notGranted)]
        }
        let slot = lock.slot, s = Int(slot)
        if current.writesValueBlock, let vb = valueBlock { slots[s].valueBlock = ValueBlock(bytes: vb) }
        // A conversion compatible with the other granted locks is granted at once, even past queued
        // conversions (as Linux does): it can only make the lock weaker or equal for the others.
        if !recovering && compatibleWithGranted(mode, in: slot, except: id) {
            locks[id]!.grantedMode = mode
            locks[id]!.bastSentFor = nil
            var out: [LockDirective] = [.granted(id, owner: lock.owner, resource: slots[s].name, mode: mode,
                                                 valueBlock: slots[s].valueBlock)]
            out += grantPending(slot)
            return out
        }
        if flags.contains(.noQueue) && !recovering { return [.refused(id, owner: lock.owner, error: .wouldBlock)] }
        locks[id]!.requestedMode = mode
        locks[id]!.sequence = takeSequence()
        slots[s].converting.append(id)
        queue(id, deadline: timeout.map { now &+ $0 })
        if !recovering, wouldDeadlock(id) {
            // CONVDEADLK (as in Linux): give up the granted mode (down to NL) rather than the
            // conversion, if that breaks the cycle; what waited on this holder may then go ahead.
            if flags.contains(.convDeadlock), current != .nl {
                locks[id]!.grantedMode = .nl
                locks[id]!.bastSentFor = nil
                if !wouldDeadlock(id) {
                    return [.demoted(id, owner: lock.owner, resource: slots[s].name)] + grantPending(slot)
                }
                locks[id]!.grantedMode = current
            }
            abortRequest(id)
            return [.refused(id, owner: lock.owner, error: .deadlock)]
        }
        return recovering ? [] : blockingCallbacks(for: slot)
    }

    /// Release a granted lock. A PW/EX holder may write the value block as it goes.
    public mutating func unlock(_ id: LockID, valueBlock: [UInt8]? = nil, epoch: Epoch) -> [LockDirective] {
        guard let lock = locks[id] else { return [.refused(id, owner: LockOwner(node: id.node, process: 0), error: .unknownLock)] }
        if epoch != self.epoch { return [.refused(id, owner: lock.owner, error: .staleEpoch(current: self.epoch))] }
        guard let mode = lock.grantedMode, lock.requestedMode == nil else {
            return [.refused(id, owner: lock.owner, error: .notGranted)]
        }
        if mode.writesValueBlock, let vb = valueBlock { slots[Int(lock.slot)].valueBlock = ValueBlock(bytes: vb) }
        removeLock(id)
        return [.released(id, owner: lock.owner)] + grantPending(lock.slot)
    }

    /// Cancel a waiting request or a pending conversion (a conversion falls back to its granted mode).
    public mutating func cancel(_ id: LockID) -> [LockDirective] {
        endRequest(id, with: .cancelled)
    }

    /// Expire the requests whose deadline has passed (in order of arrival).
    public mutating func tick(now: Instant) -> [LockDirective] {
        var expired: [DeadlineQueue.Entry] = []
        while let e = deadlines.earliest, e.deadline <= now {
            _ = deadlines.removeEarliest()
            if isLive(e) { expired.append(e) }
        }
        var out: [LockDirective] = []
        for e in expired.sorted(by: { $0.sequence < $1.sequence }) { out += endRequest(e.id, with: .timedOut) }
        return out
    }

    /// The earliest deadline of any queued request, so the shell knows when to call `tick`.
    public mutating func nextDeadline() -> Instant? {
        while let e = deadlines.earliest {
            if isLive(e) { return e.deadline }
            _ = deadlines.removeEarliest()
        }
        return nil
    }

    // MARK: Membership and recovery

    /// Drop every lock of a node. Call only once the node is fenced: it can no longer act on them.
    /// A PW/EX holder that died may have changed what the value block describes, so it becomes invalid.
    public mutating func purge(node: UInt32) -> [LockDirective] {
        guard usageByNode[node] != nil else { return [] }
        return purge { $0.node == node }
    }

    /// Drop every lock of one process on a node (the process exited).
    public mutating func purge(owner: LockOwner) -> [LockDirective] {
        guard usageByNode[owner.node] != nil else { return [] }
        return purge { $0 == owner }
    }

    private mutating func purge(where match: (LockOwner) -> Bool) -> [LockDirective] {
        let victims = locks.filter { match($0.value.owner) }.sorted { $0.value.sequence < $1.value.sequence }
        var touched = Set<UInt32>()
        // Pending requests of the purged owner end here, so that every request has an outcome.
        var out: [LockDirective] = victims.filter { $0.value.requestedMode != nil }
            .map { .refused($0.key, owner: $0.value.owner, error: .fenced) }
        for (id, l) in victims {
            if let g = l.grantedMode, g.writesValueBlock { slots[Int(l.slot)].valueBlock.valid = false }
            removeLock(id)
            touched.insert(l.slot)
        }
        guard !recovering else { return out }
        for slot in touched.sorted(by: { slots[Int($0)].name < slots[Int($1)].name }) { out += grantPending(slot) }
        return out
    }

    /// Start recovery under a new epoch: the table is emptied and nothing is granted until
    /// `endRecovery`. Survivors re-send their granted locks with `recover`.
    public mutating func beginRecovery(epoch: Epoch) {
        precondition(epoch > self.epoch, "a new master's epoch must be higher")
        let sequence = nextSequence
        self = LockTable(epoch: epoch, recovering: true)
        nextSequence = sequence
    }

    private var recoveredValueBlocks: [UInt32: [(LockMode, ValueBlock)]] = [:]

    /// A survivor re-sends a lock it holds, with the value block it last saw.
    public mutating func recover(_ id: LockID, owner: LockOwner, resource name: String, mode: LockMode,
                                 valueBlock: ValueBlock, epoch: Epoch) -> LockError? {
        guard recovering else { return .notGranted }
        if epoch != self.epoch { return .staleEpoch(current: self.epoch) }
        if let known = locks[id] {
            // A node that reconnects during recovery re-sends the same locks: idempotent.
            let same = known.owner == owner && slots[Int(known.slot)].name == name && known.grantedMode == mode
            return same ? nil : .duplicateLock
        }
        let slot = slotFor(name)
        // Survivors' locks were compatible under the old master; refuse anything that is not, rather
        // than grant two incompatible modes.
        guard compatibleWithGranted(mode, in: slot, except: nil) else {
            dropIfIdle(slot)
            return .notGranted
        }
        insert(id, StoredLock(owner: owner, sequence: takeSequence(), deadline: Self.noDeadline, slot: slot,
                              grantedMode: mode, requestedMode: nil), name: name)
        slots[Int(slot)].granted.append(id)
        recoveredValueBlocks[slot, default: []].append((mode, valueBlock))
        return nil
    }

    /// End recovery: settle value blocks by the standard rule, then serve queued requests.
    /// A surviving lock above CR carries the current value block (no PW/EX could have been granted
    /// beside a CW/PR holder without it seeing the write); otherwise a dead PW/EX holder may have
    /// changed it, so it is marked not valid.
    public mutating func endRecovery() -> [LockDirective] {
        for (slot, seen) in recoveredValueBlocks {
            let strongest = seen.filter { $0.0 > .cr }.max { $0.0 < $1.0 }
            slots[Int(slot)].valueBlock = strongest.map { $0.1 } ?? ValueBlock(bytes: [], valid: false)
        }
        recoveredValueBlocks = [:]
        recovering = false
        var out: [LockDirective] = []
        for name in slotOf.keys.sorted() { out += grantPending(slotOf[name]!) }
        return out
    }

    // MARK: Queries

    public func lock(_ id: LockID) -> Lock? { locks[id].map { view(id, $0) } }

    public func resource(_ name: String) -> Resource? { slotOf[name].map { slots[Int($0)] } }

    /// Every resource name, in no order. O(resources): for listings and tests.
    public var resourceNames: Dictionary<String, UInt32>.Keys { slotOf.keys }

    public var lockCount: Int { locks.count }

    /// Every lock. O(locks): for tests.
    public var allLocks: [Lock] { locks.map { view($0.key, $0.value) } }

    /// Every lock of a node, by id. O(locks): for the resync of a reconnecting node.
    public func locks(of node: UInt32) -> [Lock] {
        guard usageByNode[node] != nil else { return [] }
        return locks.filter { $0.value.owner.node == node }.map { view($0.key, $0.value) }.sorted { $0.id < $1.id }
    }

    /// The queued requests (waiting or converting) of a node's owners, by id.
    public func queuedRequests(of node: UInt32) -> [LockID] {
        queuedByOwner.filter { $0.key.node == node }.flatMap(\.value).sorted()
    }

    /// How many locks a node has in the table and the bytes of their resource names.
    public func usage(of node: UInt32) -> NodeUsage { usageByNode[node] ?? NodeUsage() }

    /// Checks the indexes against the locks they summarise; nil when they agree. O(locks): for the
    /// model tests.
    func auditIndexes() -> String? {
        var queued: [LockOwner: Set<LockID>] = [:]
        var usage: [UInt32: NodeUsage] = [:]
        for (id, l) in locks {
            let name = slots[Int(l.slot)].name
            guard slotOf[name] == l.slot else { return "lock \(id) names slot \(l.slot), not that of \(name)" }
            usage[l.owner.node, default: NodeUsage()].locks += 1
            usage[l.owner.node, default: NodeUsage()].nameBytes += name.utf8.count
            guard l.requestedMode != nil else { continue }
            queued[l.owner, default: []].insert(id)
            if l.deadline != Self.noDeadline, !isLive(DeadlineQueue.Entry(deadline: l.deadline, sequence: l.sequence, id: id)) {
                return "deadline of \(id) is not live"
            }
        }
        guard queued == queuedByOwner else { return "queued requests by owner disagree: \(queued) vs \(queuedByOwner)" }
        guard queued.values.map(\.count).reduce(0, +) == queuedCount else { return "queued count \(queuedCount) is wrong" }
        guard usage == usageByNode else { return "node usage disagrees: \(usage) vs \(usageByNode)" }
        guard !deadlines.needsCompaction(live: queuedCount) else { return "deadline heap not compacted: \(deadlines.count) entries" }
        for (name, slot) in slotOf where slots[Int(slot)].name != name || slots[Int(slot)].isIdle {
            return "slot \(slot) of \(name) is wrong or idle"
        }
        return nil
    }

    // MARK: Internals

    private func view(_ id: LockID, _ l: StoredLock) -> Lock {
        Lock(id: id, owner: l.owner, resource: slots[Int(l.slot)].name, grantedMode: l.grantedMode,
             requestedMode: l.requestedMode, deadline: l.deadline == Self.noDeadline ? nil : l.deadline, sequence: l.sequence)
    }

    private mutating func takeSequence() -> UInt64 {
        nextSequence += 1
        return nextSequence
    }

    /// The slot of a resource, made if it does not exist.
    private mutating func slotFor(_ name: String) -> UInt32 {
        if let s = slotOf[name] { return s }
        let s: UInt32
        if let free = freeSlots.popLast() {
            s = free
            slots[Int(s)] = Resource(name: name)
        } else {
            s = UInt32(slots.count)
            slots.append(Resource(name: name))
        }
        slotOf[name] = s
        return s
    }

    /// An idle resource (no locks, empty valid value block) is dropped; its slot is reused.
    private mutating func dropIfIdle(_ slot: UInt32) {
        let s = Int(slot)
        guard slots[s].isIdle, slotOf[slots[s].name] == slot else { return }
        slotOf[slots[s].name] = nil
        slots[s] = Resource(name: "")
        freeSlots.append(slot)
    }

    private mutating func insert(_ id: LockID, _ lock: StoredLock, name: String) {
        locks[id] = lock
        usageByNode[lock.owner.node, default: NodeUsage()].locks += 1
        usageByNode[lock.owner.node, default: NodeUsage()].nameBytes += name.utf8.count
    }

    /// A request starts to wait (new request or conversion): index it, and its deadline.
    private mutating func queue(_ id: LockID, deadline: Instant?) {
        let l = locks[id]!
        queuedByOwner[l.owner, default: []].insert(id)
        queuedCount += 1
        if let deadline {
            locks[id]!.deadline = deadline
            deadlines.insert(DeadlineQueue.Entry(deadline: deadline, sequence: l.sequence, id: id))
        }
    }

    /// A request stops waiting (granted, refused, cancelled, or its lock removed).
    private mutating func unqueue(_ id: LockID) {
        guard let l = locks[id], l.requestedMode != nil else { return }
        locks[id]!.requestedMode = nil
        locks[id]!.deadline = Self.noDeadline
        if queuedByOwner[l.owner]?.remove(id) != nil {
            queuedCount -= 1
            if queuedByOwner[l.owner]!.isEmpty { queuedByOwner[l.owner] = nil }
        }
        if deadlines.needsCompaction(live: queuedCount) {
            let live = queuedByOwner.values.flatMap { $0 }.compactMap { qid in
                let q = locks[qid]!
                return q.deadline == Self.noDeadline ? nil : DeadlineQueue.Entry(deadline: q.deadline, sequence: q.sequence, id: qid)
            }
            deadlines.replace(with: live)
        }
    }

    /// An entry of the deadline heap is live while its lock still waits under that sequence.
    private func isLive(_ e: DeadlineQueue.Entry) -> Bool {
        guard let l = locks[e.id] else { return false }
        return l.requestedMode != nil && l.sequence == e.sequence && l.deadline == e.deadline
    }

    private func compatibleWithGranted(_ mode: LockMode, in slot: UInt32, except: LockID?) -> Bool {
        slots[Int(slot)].granted.allSatisfy { gid in
            gid == except || locks[gid]!.grantedMode!.isCompatible(with: mode)
        }
    }

    /// Ends a pending request (wait or convert) without a grant.
    private mutating func endRequest(_ id: LockID, with error: LockError) -> [LockDirective] {
        guard let lock = locks[id] else { return [.refused(id, owner: LockOwner(node: id.node, process: 0), error: .unknownLock)] }
        guard lock.requestedMode != nil else { return [.refused(id, owner: lock.owner, error: .notGranted)] }
        abortRequest(id)
        return [.refused(id, owner: lock.owner, error: error)] + grantPending(lock.slot)
    }

    /// Take a request out of its queue: a waiter disappears, a conversion returns to its granted mode.
    private mutating func abortRequest(_ id: LockID) {
        guard let lock = locks[id] else { return }
        if lock.grantedMode == nil {
            removeLock(id)
        } else {
            slots[Int(lock.slot)].converting.removeAll { $0 == id }
            unqueue(id)
        }
    }

    /// Remove a lock from the table, its queues and indexes; drop its resource if idle.
    private mutating func removeLock(_ id: LockID) {
        guard let lock = locks[id] else { return }
        unqueue(id)
        locks[id] = nil
        let name = slots[Int(lock.slot)].name
        usageByNode[lock.owner.node]!.locks -= 1
        usageByNode[lock.owner.node]!.nameBytes -= name.utf8.count
        if usageByNode[lock.owner.node]!.locks == 0 { usageByNode[lock.owner.node] = nil }
        let s = Int(lock.slot)
        if lock.requestedMode != nil && lock.grantedMode == nil {
            slots[s].waiting.removeAll { $0 == id }
        } else {
            if lock.requestedMode != nil { slots[s].converting.removeAll { $0 == id } }
            slots[s].granted.removeAll { $0 == id }
        }
        dropIfIdle(lock.slot)
    }

    /// Serve queued requests: conversions first (any that fit, in order), then new requests strictly
    /// in order and only once no conversion waits. Then send blocking callbacks for what still waits.
    private mutating func grantPending(_ slot: UInt32) -> [LockDirective] {
        let s = Int(slot)
        guard !recovering, slotOf[slots[s].name] == slot else { return [] }
        let name = slots[s].name
        var out: [LockDirective] = []
        var progress = true
        while progress {
            progress = false
            for cid in slots[s].converting {
                let want = locks[cid]!.requestedMode!
                guard compatibleWithGranted(want, in: slot, except: cid) else { continue }
                unqueue(cid)
                locks[cid]!.grantedMode = want
                locks[cid]!.bastSentFor = nil
                slots[s].converting.removeAll { $0 == cid }
                out.append(.granted(cid, owner: locks[cid]!.owner, resource: name, mode: want, valueBlock: slots[s].valueBlock))
                progress = true
                break
            }
        }
        while slots[s].converting.isEmpty, let wid = slots[s].waiting.first {
            let want = locks[wid]!.requestedMode!
            guard compatibleWithGranted(want, in: slot, except: nil) else { break }
            unqueue(wid)
            locks[wid]!.grantedMode = want
            slots[s].waiting.removeFirst()
            slots[s].granted.append(wid)
            out.append(.granted(wid, owner: locks[wid]!.owner, resource: name, mode: want, valueBlock: slots[s].valueBlock))
        }
        dropIfIdle(slot)
        return out + blockingCallbacks(for: slot)
    }

    /// Blocking callbacks go to granted holders that conflict with the first blocked request.
    private mutating func blockingCallbacks(for slot: UInt32) -> [LockDirective] {
        let s = Int(slot)
        guard !recovering, slotOf[slots[s].name] == slot else { return [] }
        guard let first = slots[s].converting.first ?? slots[s].waiting.first, let wanted = locks[first]!.requestedMode else { return [] }
        var out: [LockDirective] = []
        for gid in slots[s].granted where gid != first {
            let g = locks[gid]!
            guard !g.grantedMode!.isCompatible(with: wanted), g.bastSentFor != wanted else { continue }
            locks[gid]!.bastSentFor = wanted
            out.append(.blocking(gid, owner: g.owner, resource: slots[s].name, blocked: wanted))
        }
        return out
    }

    // MARK: Deadlock detection

    /// Owners that a queued request waits for: holders of conflicting granted locks, and owners of
    /// conflicting requests queued ahead of it (they will be served first). Looks at its resource only.
    private func blockers(of id: LockID) -> [LockOwner] {
        guard let l = locks[id], let want = l.requestedMode else { return [] }
        let res = slots[Int(l.slot)]
        var out: [LockOwner] = []
        for gid in res.granted where gid != id {
            let g = locks[gid]!
            if !g.grantedMode!.isCompatible(with: want) { out.append(g.owner) }
        }
        let queue = l.grantedMode == nil ? res.converting + res.waiting : res.converting
        for qid in queue {
            if qid == id { break }
            let q = locks[qid]!
            if !q.requestedMode!.isCompatible(with: want) { out.append(q.owner) }
        }
        return out
    }

    /// True if the owner of `id`, now waiting, waits (transitively) for itself. The edges of an
    /// owner are the blockers of its queued requests: only waiting owners reachable from `id` are
    /// visited, never the whole table.
    private func wouldDeadlock(_ id: LockID) -> Bool {
        guard let start = locks[id]?.owner else { return false }
        var seen = Set<LockOwner>()
        var stack = blockers(of: id)
        while let o = stack.popLast() {
            if o == start { return true }
            guard seen.insert(o).inserted, let waits = queuedByOwner[o] else { continue }
            for w in waits { stack += blockers(of: w) }
        }
        return false
    }
}
