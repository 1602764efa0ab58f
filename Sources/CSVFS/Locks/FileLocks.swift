import Dispatch
import Glibc

/// The coordinator's file locks: `FileLockTable` behind a lock, and the callers blocked in `F_SETLKW` or a
/// blocking `flock`, each asleep on its own semaphore until the table grants its wait or it is cancelled.
///
/// A wait lasts at most `patience` per call: a remote caller waits inside an RPC, whose deadline must not
/// pass, so it is answered "still waiting" and asks again. The wait leaves the queue when it gives up, rather
/// than staying in it unheard: a grant nobody hears of would hold a lock no process knows it has.
public final class FileLocks: Sendable {
    private struct Sleeper {
        let node: UInt32
        let semaphore = DispatchSemaphore(value: 0)
        /// Set, before the semaphore is signalled, to what ended the wait.
        var outcome: Result<Void, Errno>?
    }

    private struct State {
        var table = FileLockTable()
        var sleepers: [UInt64: Sleeper] = [:]
        /// Waits cancelled before their request arrived (the interrupt overtook the request on another
        /// thread): the request, when it comes, ends at once. Bounded: only the latest are kept.
        var cancelledEarly: [UInt64] = []
        /// A new coordinator's recovery: the nodes whose locks it has yet to hear of, and when it stops waiting.
        var awaiting: Set<UInt32> = []
        var recoveryEnds: ContinuousClock.Instant?
        var members: Set<UInt32>?
        /// The inodes whose locks a node keeps itself, after `withdraw`, until its `deposit`, with the locks the
        /// withdrawal took out (asked again, as a call whose answer was lost is, it answers them again).
        var delegated: [UInt64: (node: UInt32, locks: [FileLock])] = [:]
    }

    private let state = Locked(State())
    public let patience: Duration
    /// Each wait holds a thread of the coordinator while it sleeps: a node gets this many at once, and ENOLCK
    /// beyond (as the kernel answers when it runs out of lock records).
    public let waitsPerNode: Int

    public init(patience: Duration = .seconds(15), waitsPerNode: Int = 256) {
        self.patience = patience
        self.waitsPerNode = waitsPerNode
    }

    public func conflict(with request: FileLock) -> FileLock? {
        waitForRecovery()
        return state.withLock { $0.table.conflict(with: request) }
    }

    /// Sets `request`. Without a wait id, a conflict is EAGAIN. With one, it waits: true once granted, false
    /// if still waiting after `patience` (ask again with the same id), EDEADLK if waiting would deadlock,
    /// EINTR once `cancel(wait:)` was called for it.
    public func lock(_ request: FileLock, wait: UInt64?) throws(Errno) -> Bool {
        waitForRecovery()
        let queued = try state.withLock { (state) throws(Errno) -> DispatchSemaphore? in
            if let wait, let early = state.cancelledEarly.firstIndex(of: wait) {
                state.cancelledEarly.remove(at: early)
                throw .interrupted
            }
            if let wait {
                // Wait ids are the caller's: one already in use, or one wait too many, is refused, never queued.
                guard state.sleepers[wait] == nil else { throw .invalid }
                let node = request.owner.node
                guard state.sleepers.values.lazy.filter({ $0.node == node }).count < waitsPerNode else {
                    throw .noLocks
                }
            }
            switch state.table.lock(request, wait: wait) {
            case .granted:
                Self.wake(state.table.grantWaits(on: request.ino), in: &state)
                return nil
            case .conflict: throw .wouldBlock
            case .deadlock: throw .deadlock
            case .queued:
                let sleeper = Sleeper(node: request.owner.node)
                state.sleepers[wait!] = sleeper
                return sleeper.semaphore
            }
        }
        guard let wait, let queued else { return true }
        let (seconds, attoseconds) = patience.components
        let woken = queued.wait(timeout: .now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)))
        let outcome = state.withLock { (state) -> Result<Void, Errno>? in
            if woken == .timedOut, state.sleepers[wait]?.outcome == nil {
                _ = state.table.cancel(wait: wait)
                state.sleepers[wait] = nil
                return nil
            }
            return state.sleepers.removeValue(forKey: wait)?.outcome
        }
        guard let outcome else { return false }
        try outcome.get()
        return true
    }

    /// Ends a wait with EINTR: its caller was interrupted by a signal.
    public func cancel(wait: UInt64) {
        state.withLock { state in
            if state.table.cancel(wait: wait), var sleeper = state.sleepers[wait] {
                sleeper.outcome = .failure(.interrupted)
                state.sleepers[wait] = sleeper
                sleeper.semaphore.signal()
            } else if state.sleepers[wait] == nil {
                state.cancelledEarly.append(wait)
                if state.cancelledEarly.count > 256 { state.cancelledEarly.removeFirst() }
            }
        }
    }

    public func unlock(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) {
        change { $0.unlock(ino: ino, kind: kind, range: range, owner: owner) }
    }

    /// A close() by `owner`: its record locks on `ino` go.
    public func releaseRecordLocks(_ ino: UInt64, owner: FileLockOwner) {
        change { $0.releaseRecordLocks(ino: ino, owner: owner) }
    }

    /// The last close of an open file: the OFD and flock locks taken through it go.
    public func release(handle: UInt64, node: UInt32) {
        change { $0.release(handle: handle, node: node) }
    }

    /// A node that left or was fenced: every lock and wait of it goes.
    public func release(node: UInt32) {
        change { $0.release(node: node) }
        state.withLock { $0.delegated = $0.delegated.filter { $0.value.node != node } }
    }

    /// `node` keeps the locks of `ino` itself from now on (it holds the inode's DLM lock in EX, so no other node
    /// asks about them until it gives them back): if every lock on it is the node's and nobody waits for one,
    /// they leave the table and are returned; EAGAIN otherwise.
    public func withdraw(_ ino: UInt64, node: UInt32) throws(Errno) -> [FileLock] {
        waitForRecovery()
        return try state.withLock { (state) throws(Errno) -> [FileLock] in
            guard state.table.onlyHeld(by: node, on: ino) else { throw .wouldBlock }
            if let earlier = state.delegated[ino], earlier.node == node { return earlier.locks }
            let locks = state.table.locks(on: ino)
            Self.wake(state.table.release(ino: ino, node: node), in: &state)
            state.delegated[ino] = (node, locks)
            return locks
        }
    }

    /// `node` gives back the locks of `ino` it kept: they replace whatever the table has of it there (a
    /// reclaim may have set some meanwhile). They were granted by the node, so they are set as a reclaim is.
    public func deposit(_ ino: UInt64, _ locks: [FileLock], node: UInt32) {
        change { table in
            var grants = table.release(ino: ino, node: node)
            for lock in locks where lock.ino == ino && lock.owner.node == node { _ = table.lock(lock, wait: nil) }
            grants += table.grantWaits(on: ino)
            return grants
        }
        state.withLock { state in
            if state.delegated[ino]?.node == node { state.delegated[ino] = nil }
        }
    }

    /// The inodes whose locks a node keeps itself now.
    public var delegations: [DelegatedInode] {
        state.withLock { $0.delegated.map { DelegatedInode(ino: $0.key, node: $0.value.node) }.sorted { $0.ino < $1.ino } }
    }

    /// Holds back every lock and lock test until the nodes of `awaiting` have reclaimed what they held under the
    /// coordinator before (or left), or `limit` has passed, as the DLM's master does with its locks: granted
    /// earlier, a lock could take bytes a node still holds.
    public func beginRecovery(awaiting: Set<UInt32>, limit: Duration) {
        state.withLock { state in
            state.awaiting = state.members.map { awaiting.intersection($0) } ?? awaiting
            state.recoveryEnds = state.awaiting.isEmpty ? nil : .now + limit
        }
    }

    /// What `node` held under the coordinator before: set as they were (they were granted then), and the node
    /// is no longer awaited.
    public func reclaim(_ locks: [FileLock], node: UInt32) {
        state.withLock { state in
            // Reclaims never conflict with each other (the coordinator before granted them all). One that comes
            // after the recovery's limit may conflict with a lock granted since: that one stands, the late one
            // is not set.
            for lock in locks where lock.owner.node == node { _ = state.table.lock(lock, wait: nil) }
            state.awaiting.remove(node)
            if state.awaiting.isEmpty { state.recoveryEnds = nil }
        }
    }

    /// The members now: the locks and waits of a node that left go (the coordination backend drops a node only
    /// once it is fenced), and it is no longer awaited.
    public func membersChanged(_ members: Set<UInt32>) {
        change { table in
            var grants: [FileLockGrant] = []
            for node in Set(table.locks.map(\.owner.node)).union(table.waiting.map(\.request.owner.node)) where !members.contains(node) {
                grants += table.release(node: node)
            }
            return grants
        }
        state.withLock { state in
            state.members = members
            state.delegated = state.delegated.filter { members.contains($0.value.node) }
            state.awaiting.formIntersection(members)
            if state.awaiting.isEmpty { state.recoveryEnds = nil }
        }
    }

    /// Whether lock calls wait for the nodes' reclaims now.
    public var recovering: Bool { state.withLock { $0.recoveryEnds.map { ContinuousClock.now < $0 } ?? false } }

    private func waitForRecovery() {
        while let ends = state.withLock({ $0.recoveryEnds }), ContinuousClock.now < ends {
            usleep(5_000)
        }
    }

    /// Wakes every waiting caller with "still waiting" (false), its wait dropped: the table is going away, and
    /// they ask again of whoever keeps the next one.
    public func stopWaits() {
        state.withLock { state in
            for (wait, sleeper) in state.sleepers where sleeper.outcome == nil {
                _ = state.table.cancel(wait: wait)
                sleeper.semaphore.signal()
            }
        }
    }

    public var locks: [FileLock] { state.withLock { $0.table.locks } }

    /// Applies a change to the table and wakes the waits it granted.
    private func change(_ body: (inout FileLockTable) -> [FileLockGrant]) {
        state.withLock { state in Self.wake(body(&state.table), in: &state) }
    }

    private static func wake(_ grants: [FileLockGrant], in state: inout State) {
        for grant in grants {
            guard var sleeper = state.sleepers[grant.wait] else { continue }
            sleeper.outcome = .success(())
            state.sleepers[grant.wait] = sleeper
            sleeper.semaphore.signal()
        }
    }
}
