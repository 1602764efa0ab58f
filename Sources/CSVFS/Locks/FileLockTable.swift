/// What the table answered a lock request.
public enum FileLockDecision: Sendable, Equatable {
    case granted
    /// Refused now, and the caller would not wait: the lock in the way, for the refusal and for `F_GETLK`.
    case conflict(FileLock)
    /// Refused because waiting would wait forever (`EDEADLK`).
    case deadlock
    /// It waits, under the id the caller gave; a later call that frees the bytes returns it as a grant.
    case queued
}

/// A queued wait that a change to the table granted: the shell wakes the caller that queued `wait`.
public struct FileLockGrant: Sendable, Equatable {
    public var wait: UInt64
    public var lock: FileLock

    public init(wait: UInt64, lock: FileLock) {
        self.wait = wait
        self.lock = lock
    }
}

/// The coordinator's table of every cluster-wide file lock and of the requests waiting for one.
///
/// It is a pure state machine, so the rules of POSIX and flock locks can be tested without a cluster: it never
/// blocks, sleeps or talks to anyone. A call that frees bytes returns the waits it granted, and the shell that
/// owns the table wakes them.
///
/// Each inode keeps its own entry, so a call touches only the inode it names (the releases of a handle or a
/// node reach theirs through indexes, or, for a node's death, a scan: rare enough not to index for).
///
/// Every unlock, and every process close, looks at the inode's waits again, even one that freed nothing: a `lock`
/// that turned its owner's exclusive bytes shared can leave a wait grantable, and its answer has no room to say
/// so, so the next unlock or close on the inode grants it.
public struct FileLockTable: Sendable {
    /// One owner's locks of one kind: the unit POSIX merges and splits within.
    private struct Holder: Hashable {
        var owner: FileLockOwner
        var kind: FileLockKind
    }

    private struct Inode {
        /// Each holder's locks, sorted by first byte, never overlapping, and never two of one mode side by side
        /// (those are merged), so a range's neighbours are found by binary search.
        var held: [Holder: [FileLock]] = [:]
        /// The handles each owner's locks here were taken through, for the last close of a handle; kept until
        /// the owner holds nothing here.
        var handles: [FileLockOwner: Set<UInt64>] = [:]
        /// The waits queued on this inode, oldest first: only a change to this inode can grant them.
        var queue: [UInt64] = []

        var isEmpty: Bool { held.isEmpty && queue.isEmpty }
    }

    /// Handles are numbered by each node on its own, so one is named by both.
    private struct HandleRef: Hashable {
        var node: UInt32
        var handle: UInt64
    }

    private struct InodeOwner: Hashable {
        var ino: UInt64
        var owner: FileLockOwner
    }

    private struct Wait {
        /// When it was queued, for `waiting` and for granting waits of several inodes in queue order.
        var order: UInt64
        var request: FileLock
    }

    private var inodes: [UInt64: Inode] = [:]
    private var waits: [UInt64: Wait] = [:]
    private var nextOrder: UInt64 = 0
    /// Every owner's waits, on any inode: the edges deadlock detection follows.
    private var waitsOfOwner: [FileLockOwner: Set<UInt64>] = [:]
    private var waitsOfHandle: [HandleRef: Set<UInt64>] = [:]
    /// The reverse of each inode's `handles`, so the last close of a handle finds its inodes without a scan.
    private var lockedThrough: [HandleRef: Set<InodeOwner>] = [:]

    public init() {}

    // MARK: Asking

    /// The first held lock that conflicts with `request` (F_GETLK), nil if it could be granted now.
    ///
    /// "First" in the order of `locks`, so the answer does not depend on how the dictionaries hash.
    public func conflict(with request: FileLock) -> FileLock? {
        guard let inode = inodes[request.ino] else { return nil }
        var first: FileLock?
        for (holder, locks) in inode.held where holder.kind == request.kind && holder.owner != request.owner {
            guard let found = Self.firstConflict(in: locks, with: request) else { continue }
            if let earlier = first, Self.sortKey(earlier) <= Self.sortKey(found) { continue }
            first = found
        }
        return first
    }

    /// Every held lock, ordered by inode, then owner node, owner, kind, range start. (Merged ranges are one entry; its
    /// handle and pid are those of the request that last set it.)
    public var locks: [FileLock] { inodes.keys.sorted().flatMap { locks(on: $0) } }

    /// The held locks on `ino`, in the order of `locks`.
    public func locks(on ino: UInt64) -> [FileLock] {
        guard let inode = inodes[ino] else { return [] }
        return inode.held.sorted { Self.sortKey($0.key) < Self.sortKey($1.key) }.flatMap(\.value)
    }

    public func hasLocks(on ino: UInt64) -> Bool { inodes[ino]?.held.isEmpty == false }

    /// Whether `node` may keep the locks of `ino` itself: every lock held on it is of `node`'s owners, and no
    /// wait is queued on it (a wait is granted only here).
    public func onlyHeld(by node: UInt32, on ino: UInt64) -> Bool {
        guard let inode = inodes[ino] else { return true }
        return inode.queue.isEmpty && inode.held.keys.allSatisfy { $0.owner.node == node }
    }

    /// The queued waits in the order they were queued.
    public var waiting: [(wait: UInt64, request: FileLock)] {
        waits.sorted { $0.value.order < $1.value.order }.map { (wait: $0.key, request: $0.value.request) }
    }

    // MARK: Changing

    /// Sets `request` for its owner, merging with and splitting the owner's own locks of that kind on that inode as POSIX says
    /// (a new range replaces whatever the owner held there; adjacent or overlapping ranges of the same mode merge; a
    /// change of mode in the middle of a range splits it in three). If it conflicts with another owner's lock:
    /// `.conflict(thatLock)` when `wait` is nil, and nothing changes; `.deadlock` when the request is a `.record` lock and
    /// queueing it would close a cycle of owners waiting on each other (follow: requester -> owners holding locks that
    /// conflict with it -> for each of them, every queued wait of that owner -> owners holding locks conflicting with that
    /// wait -> ...; reaching the requester is a deadlock); otherwise it is queued under the id `wait` and answers `.queued`.
    /// flock locks are never refused as deadlock (Linux does not detect flock deadlocks).
    ///
    /// A queued request leaves the owner's own locks as they were until it is granted, as Linux does: an owner
    /// waiting to upgrade a shared lock keeps it meanwhile.
    public mutating func lock(_ request: FileLock, wait: UInt64?) -> FileLockDecision {
        precondition(0 <= request.range.first && request.range.first <= request.range.last,
                     "a lock range runs forwards from byte 0 or later: \(request.range)")
        guard let holder = conflict(with: request) else {
            set(request)
            return .granted
        }
        guard let wait else { return .conflict(holder) }
        if request.kind == .record && closesCycle(request) { return .deadlock }
        enqueue(request, as: wait)
        return .queued
    }

    /// Removes `range` from `owner`'s locks of `kind` on `ino` (splitting them); returns the queued waits this granted.
    public mutating func unlock(ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) -> [FileLockGrant] {
        precondition(range.first <= range.last, "an unlock range runs forwards: \(range)")
        let holder = Holder(owner: owner, kind: kind)
        if inodes[ino]?.held[holder] != nil {
            Self.remove(range, from: &inodes[ino]!.held[holder]!)
            tidy(ino: ino, owner: owner)
        }
        return grantWaits(on: [ino])
    }

    /// Grants the waits on `ino` that no longer conflict. After a granted `lock`, the shell asks: a lock that
    /// turned its owner's exclusive bytes shared (a downgrade) lets the shared waits on them through.
    public mutating func grantWaits(on ino: UInt64) -> [FileLockGrant] {
        grantWaits(on: [ino])
    }

    /// Drops a queued wait (interrupted by a signal, or its caller stopped waiting); true if it was queued.
    ///
    /// Nothing is granted: a wait holds no bytes, so dropping one frees none.
    public mutating func cancel(wait: UInt64) -> Bool {
        removeWait(wait) != nil
    }

    /// Drops every `.record` lock of `owner` on `ino`: a close() by a process releases all its POSIX locks on the file.
    public mutating func releaseRecordLocks(ino: UInt64, owner: FileLockOwner) -> [FileLockGrant] {
        if inodes[ino]?.held.removeValue(forKey: Holder(owner: owner, kind: .record)) != nil {
            tidy(ino: ino, owner: owner)
        }
        return grantWaits(on: [ino])
    }

    /// The last close of an open file (the handle of `node`): drops every lock, of either kind, of each owner that took a lock
    /// on that inode through this handle (its OFD and flock locks; a POSIX owner's locks were already dropped by its close),
    /// and every queued wait made through the handle.
    public mutating func release(handle: UInt64, node: UInt32) -> [FileLockGrant] {
        let ref = HandleRef(node: node, handle: handle)
        // The handle's own waits go first, so the locks it frees are not granted to a caller that is gone.
        for wait in waitsOfHandle[ref] ?? [] { removeWait(wait) }
        var touched: Set<UInt64> = []
        for held in lockedThrough[ref] ?? [] {
            dropLocks(of: held.owner, on: held.ino)
            touched.insert(held.ino)
        }
        return grantWaits(on: touched)
    }

    /// Drops every lock and queued wait of `node` (it died and was fenced, or it left the cluster).
    public mutating func release(node: UInt32) -> [FileLockGrant] {
        for (wait, queued) in waits where queued.request.owner.node == node { removeWait(wait) }
        var held: [InodeOwner] = []
        for (ino, inode) in inodes {
            let owners = Set(inode.held.keys.lazy.map(\.owner).filter { $0.node == node })
            held += owners.map { InodeOwner(ino: ino, owner: $0) }
        }
        for lock in held { dropLocks(of: lock.owner, on: lock.ino) }
        return grantWaits(on: Set(held.map(\.ino)))
    }

    /// Drops every lock of `node`'s owners on `ino` (its waits stay); returns the waits this granted.
    public mutating func release(ino: UInt64, node: UInt32) -> [FileLockGrant] {
        guard let inode = inodes[ino] else { return [] }
        for owner in Set(inode.held.keys.lazy.map(\.owner).filter { $0.node == node }) { dropLocks(of: owner, on: ino) }
        return grantWaits(on: [ino])
    }

    // MARK: The table's bookkeeping

    /// Sets a request that conflicts with no one: replaces the owner's locks on its range, merges with neighbours.
    private mutating func set(_ request: FileLock) {
        let holder = Holder(owner: request.owner, kind: request.kind)
        Self.set(request, in: &inodes[request.ino, default: Inode()].held[holder, default: []])
        inodes[request.ino]!.handles[request.owner, default: []].insert(request.handle)
        lockedThrough[HandleRef(node: request.owner.node, handle: request.handle), default: []]
            .insert(InodeOwner(ino: request.ino, owner: request.owner))
    }

    private mutating func dropLocks(of owner: FileLockOwner, on ino: UInt64) {
        inodes[ino]?.held[Holder(owner: owner, kind: .record)] = nil
        inodes[ino]?.held[Holder(owner: owner, kind: .flock)] = nil
        tidy(ino: ino, owner: owner)
    }

    /// Forgets what `owner`'s locks on `ino` left empty, so the table does not grow with every file ever locked.
    private mutating func tidy(ino: UInt64, owner: FileLockOwner) {
        guard inodes[ino] != nil else { return }
        for kind in [FileLockKind.record, .flock] where inodes[ino]!.held[Holder(owner: owner, kind: kind)]?.isEmpty == true {
            inodes[ino]!.held[Holder(owner: owner, kind: kind)] = nil
        }
        let stillHolds = [FileLockKind.record, .flock].contains { inodes[ino]!.held[Holder(owner: owner, kind: $0)] != nil }
        if !stillHolds, let handles = inodes[ino]!.handles.removeValue(forKey: owner) {
            for handle in handles {
                let ref = HandleRef(node: owner.node, handle: handle)
                lockedThrough[ref]?.remove(InodeOwner(ino: ino, owner: owner))
                if lockedThrough[ref]?.isEmpty == true { lockedThrough[ref] = nil }
            }
        }
        if inodes[ino]!.isEmpty { inodes[ino] = nil }
    }

    private mutating func enqueue(_ request: FileLock, as wait: UInt64) {
        precondition(waits[wait] == nil, "wait \(wait) is already queued")
        waits[wait] = Wait(order: nextOrder, request: request)
        nextOrder += 1
        inodes[request.ino, default: Inode()].queue.append(wait)
        waitsOfOwner[request.owner, default: []].insert(wait)
        waitsOfHandle[HandleRef(node: request.owner.node, handle: request.handle), default: []].insert(wait)
    }

    @discardableResult
    private mutating func removeWait(_ wait: UInt64) -> FileLock? {
        guard let request = waits.removeValue(forKey: wait)?.request else { return nil }
        inodes[request.ino]?.queue.removeAll { $0 == wait }
        if inodes[request.ino]?.isEmpty == true { inodes[request.ino] = nil }
        waitsOfOwner[request.owner]?.remove(wait)
        if waitsOfOwner[request.owner]?.isEmpty == true { waitsOfOwner[request.owner] = nil }
        let ref = HandleRef(node: request.owner.node, handle: request.handle)
        waitsOfHandle[ref]?.remove(wait)
        if waitsOfHandle[ref]?.isEmpty == true { waitsOfHandle[ref] = nil }
        return request
    }

    /// Grants, oldest first, every wait on `inos` that no longer conflicts, each set before the next is looked at
    /// (so it may block a younger one). A grant can itself free bytes (a waiter asking for a shared lock over its
    /// own exclusive one), so passes repeat until one grants nothing.
    private mutating func grantWaits(on inos: Set<UInt64>) -> [FileLockGrant] {
        var pending = inos.flatMap { inodes[$0]?.queue ?? [] }
        pending.sort { waits[$0]!.order < waits[$1]!.order }
        var grants: [FileLockGrant] = []
        var grantedAny = true
        while grantedAny {
            grantedAny = false
            var stillWaiting: [UInt64] = []
            for wait in pending {
                let request = waits[wait]!.request
                guard conflict(with: request) == nil else {
                    stillWaiting.append(wait)
                    continue
                }
                removeWait(wait)
                set(request)
                grants.append(FileLockGrant(wait: wait, lock: request))
                grantedAny = true
            }
            pending = stillWaiting
        }
        return grants
    }

    /// Whether queueing `request` would close a cycle of owners waiting on each other: a walk from the owners in
    /// its way, through the waits each of them has queued, to the owners in those waits' way, reaches its owner.
    private func closesCycle(_ request: FileLock) -> Bool {
        var seen: Set<FileLockOwner> = []
        var next = blockers(of: request)
        while let owner = next.popLast() {
            if owner == request.owner { return true }
            guard seen.insert(owner).inserted else { continue }
            for wait in waitsOfOwner[owner] ?? [] { next += blockers(of: waits[wait]!.request) }
        }
        return false
    }

    /// The owners holding a lock that conflicts with `request`.
    private func blockers(of request: FileLock) -> [FileLockOwner] {
        guard let inode = inodes[request.ino] else { return [] }
        return inode.held.compactMap { holder, locks in
            holder.kind == request.kind && holder.owner != request.owner && Self.firstConflict(in: locks, with: request) != nil
                ? holder.owner : nil
        }
    }

    // MARK: One holder's sorted locks

    /// The lowest of one holder's `locks` that conflicts with `request`, by `FileLock.conflicts`, the one rule (the
    /// search only skips the locks that end before the request begins).
    private static func firstConflict(in locks: [FileLock], with request: FileLock) -> FileLock? {
        var index = firstIndex(in: locks, endingAtOrAfter: request.range.first)
        while index < locks.count && locks[index].range.first <= request.range.last {
            if locks[index].conflicts(with: request) { return locks[index] }
            index += 1
        }
        return nil
    }

    /// Sets `request` in one holder's locks: what they held on its range goes, and a neighbour of the same mode
    /// that touches it joins it (after the removal none overlaps it, so touching means adjacent).
    private static func set(_ request: FileLock, in locks: inout [FileLock]) {
        remove(request.range, from: &locks)
        let range = request.range
        var lower = firstIndex(in: locks, endingAtOrAfter: range.first)
        var upper = lower
        var merged = request
        if lower > 0, locks[lower - 1].mode == request.mode, locks[lower - 1].range.last + 1 == range.first {
            lower -= 1
            merged.range.first = locks[lower].range.first
        }
        if upper < locks.count, locks[upper].mode == request.mode, range.last < FileLockRange.endOfFile,
           locks[upper].range.first == range.last + 1 {
            merged.range.last = locks[upper].range.last
            upper += 1
        }
        locks.replaceSubrange(lower..<upper, with: CollectionOfOne(merged))
    }

    /// Removes `range` from one holder's locks, keeping the parts of each that lie outside it.
    private static func remove(_ range: FileLockRange, from locks: inout [FileLock]) {
        let lower = firstIndex(in: locks, endingAtOrAfter: range.first)
        var upper = lower
        var kept: [FileLock] = []
        while upper < locks.count && locks[upper].range.first <= range.last {
            let lock = locks[upper]
            if lock.range.first < range.first {
                var before = lock
                before.range.last = range.first - 1
                kept.append(before)
            }
            if lock.range.last > range.last {
                var after = lock
                after.range.first = range.last + 1
                kept.append(after)
            }
            upper += 1
        }
        locks.replaceSubrange(lower..<upper, with: kept)
    }

    /// The index of the first of `locks` whose last byte is `byte` or later. Sorted and apart, the locks are
    /// sorted by last byte too.
    private static func firstIndex(in locks: [FileLock], endingAtOrAfter byte: Int64) -> Int {
        var low = 0, high = locks.count
        while low < high {
            let middle = (low + high) / 2
            if locks[middle].range.last < byte { low = middle + 1 } else { high = middle }
        }
        return low
    }

    private static func sortKey(_ holder: Holder) -> (UInt32, UInt64, UInt8) {
        (holder.owner.node, holder.owner.owner, holder.kind.rawValue)
    }

    private static func sortKey(_ lock: FileLock) -> (UInt32, UInt64, UInt8, Int64) {
        (lock.owner.node, lock.owner.owner, lock.kind.rawValue, lock.range.first)
    }
}
