import CSVFS
import LockManager

/// Which of a node's file-lock calls it answers itself, per inode, as a pure state machine: events in,
/// directives out, no I/O, so every race between a node's calls, its DLM answers and another node's
/// demand replays in a test.
///
/// Each inode has a DLM lock, `p<ino>`. A node asks for it in EX without queueing, so it gets it only when
/// no other node holds or wants it, and then asks the coordinator to hand the inode's file locks over
/// (`withdrawLocks`: granted if all of them are this node's and nobody waits for one). From then on the node
/// keeps them in its own table and answers every lock call on the inode from it, with no call to anyone.
/// When another node asks for the DLM lock, the node gives the file locks back (`depositLocks`), then the
/// DLM lock. A node that cannot have EX (another holds or wants the inode) holds PR instead, and its calls
/// go to the coordinator, which has all of the inode's locks while anyone holds PR. No call waits here for
/// another owner: a request that must wait gives the locks back first, so every wait, and the search for
/// deadlocks across nodes, stays the coordinator's.
struct FileLockDelegationTable {
    enum Hold: Equatable {
        /// Asking for the DLM lock or for the coordinator's consent, or turning EX into PR.
        case acquiring
        /// This node keeps the inode's locks, under the EX lock.
        case delegated(LockHandle)
        /// The locks are on their way back to the coordinator; then the DLM lock goes (`thenShared` false:
        /// another node asked for it) or becomes PR (a call of this node must wait at the coordinator).
        case givingBack(LockHandle, thenShared: Bool)
        /// The coordinator keeps the inode's locks; calls go to it under this PR lock.
        case shared(LockHandle)
        case releasing
    }

    struct Entry: Equatable {
        var hold: Hold?
        /// Calls gone to the coordinator and not yet answered: the hold stays until they are.
        var centralCalls = 0
        /// Another node asked for the DLM lock while this node was still getting it.
        var recallWanted = false
    }

    /// What a call needs of the inode.
    enum Want: Equatable {
        /// It only removes locks (an unlock, a close): the coordinator's table is right for any inode this node
        /// does not keep, so no DLM lock is needed.
        case release
        /// It reads the coordinator's table (the status): PR is enough, and an inode this node keeps needs
        /// nothing (its locks are read from `local`).
        case look
        /// It takes or tests locks: this node keeps the inode's locks if it can.
        case lock
    }

    enum Step: Equatable {
        /// Answer it from `local` (in the same step: nothing changes the hold meanwhile).
        case local
        /// Send it to the coordinator, then call `end`.
        case central
        /// Wait for the table to change (an answer of the DLM or of the coordinator), then ask again; run
        /// `directive` first, if any.
        case wait(Directive?)
    }

    enum Directive: Equatable {
        /// Ask for EX, without queueing.
        case requestExclusive(UInt64)
        /// Ask the coordinator for the inode's locks (`withdrawn`, `withdrawRefused`, `withdrawFailed`).
        case withdraw(UInt64, LockHandle)
        case requestShared(UInt64)
        case convertToShared(UInt64, LockHandle)
        /// Give these locks back to the coordinator, retrying until it has them (`deposited`) or the DLM lock
        /// is lost (`lost`).
        case deposit(UInt64, LockHandle, [FileLock], thenShared: Bool)
        case unlock(UInt64, LockHandle)
    }

    let node: UInt32
    private(set) var entries: [UInt64: Entry] = [:]
    /// The locks of the inodes this node keeps.
    var local = FileLockTable()
    /// Counts the DLM requests that failed: a call waiting when one does gives up (ENOLCK) rather than
    /// asking again forever.
    private(set) var failures = 0
    /// The inodes kept here on which no lock is held, with when that began: past `idleLimit` of them, the
    /// oldest goes back, so a node that locks ever more files holds a bounded number of DLM locks for them.
    private(set) var idleSince: [UInt64: UInt64] = [:]
    private var ticks: UInt64 = 0
    let idleLimit: Int

    init(node: UInt32, idleLimit: Int = 1024) {
        self.node = node
        self.idleLimit = idleLimit
    }

    // MARK: calls

    mutating func begin(_ ino: UInt64, _ want: Want) -> Step {
        var entry = entries[ino] ?? Entry()
        defer { store(entry, ino) }
        switch entry.hold {
        case nil where want == .release:
            entry.centralCalls += 1
            return .central
        case nil:
            // A release still on its way to the coordinator could be handed over with the locks and then
            // land on a table that no longer has them: it is answered first.
            guard entry.centralCalls == 0 else { return .wait(nil) }
            entry.hold = .acquiring
            entry.recallWanted = false
            return .wait(want == .lock ? .requestExclusive(ino) : .requestShared(ino))
        case .delegated? where want == .look:
            // The caller reads the locks this node keeps from `local` itself.
            entry.centralCalls += 1
            return .central
        case .delegated?:
            return .local
        case .shared?:
            entry.centralCalls += 1
            return .central
        case .acquiring?, .givingBack?, .releasing?:
            return .wait(nil)
        }
    }

    /// A call sent to the coordinator was answered. `holdsLocks`: whether this node's processes hold locks
    /// that the coordinator keeps on the inode; while they do, PR is kept, so the next call needs no DLM call.
    mutating func end(_ ino: UInt64, holdsLocks: Bool) -> Directive? {
        guard var entry = entries[ino], entry.centralCalls > 0 else { return nil }
        defer { store(entry, ino) }
        entry.centralCalls -= 1
        guard entry.centralCalls == 0, !holdsLocks, case .shared(let handle)? = entry.hold else { return nil }
        entry.hold = .releasing
        return .unlock(ino, handle)
    }

    /// A call was answered from `local`.
    mutating func localCallDone(_ ino: UInt64) -> Directive? {
        guard !local.hasLocks(on: ino) else {
            idleSince[ino] = nil
            return nil
        }
        ticks += 1
        idleSince[ino] = ticks
        guard idleSince.count > idleLimit, let oldest = idleSince.min(by: { $0.value < $1.value })?.key else { return nil }
        return giveBack(oldest, thenShared: false)
    }

    /// A call answered from `local` must wait for another owner: the locks go back to the coordinator, where
    /// it will wait, and this node holds PR meanwhile.
    mutating func mustWait(_ ino: UInt64) -> Directive? {
        giveBack(ino, thenShared: true)
    }

    // MARK: answers

    mutating func exclusiveGranted(_ ino: UInt64, _ handle: LockHandle) -> Directive? {
        guard entries[ino]?.hold == .acquiring else { return .unlock(ino, handle) }
        return .withdraw(ino, handle)
    }

    /// EX was refused (another node holds or wants the DLM lock), or could not be had in time.
    mutating func exclusiveRefused(_ ino: UInt64) -> Directive? {
        guard entries[ino]?.hold == .acquiring else { return nil }
        return .requestShared(ino)
    }

    mutating func withdrawn(_ ino: UInt64, _ handle: LockHandle, _ locks: [FileLock]) -> Directive? {
        guard var entry = entries[ino], entry.hold == .acquiring else { return nil }
        // They were all granted together: none refuses another.
        for lock in locks { _ = local.lock(lock, wait: nil) }
        entry.hold = .delegated(handle)
        let recall = entry.recallWanted
        entry.recallWanted = false
        store(entry, ino)
        return recall ? giveBack(ino, thenShared: false) : nil
    }

    /// The coordinator refused: another node holds a lock on the inode, or someone waits for one.
    mutating func withdrawRefused(_ ino: UInt64, _ handle: LockHandle) -> Directive? {
        guard entries[ino]?.hold == .acquiring else { return nil }
        entries[ino]!.recallWanted = false
        return .convertToShared(ino, handle)
    }

    /// The withdrawal failed without an answer: the coordinator may have handed the locks over or not, so
    /// `restoring` (what this node knows it holds there) is given back before going on under PR.
    mutating func withdrawFailed(_ ino: UInt64, _ handle: LockHandle, restoring: [FileLock]) -> Directive? {
        guard entries[ino]?.hold == .acquiring else { return nil }
        entries[ino]!.hold = .givingBack(handle, thenShared: true)
        entries[ino]!.recallWanted = false
        return .deposit(ino, handle, restoring, thenShared: true)
    }

    mutating func sharedGranted(_ ino: UInt64, _ handle: LockHandle) -> Directive? {
        guard entries[ino]?.hold == .acquiring else { return .unlock(ino, handle) }
        entries[ino]!.hold = .shared(handle)
        entries[ino]!.recallWanted = false
        return nil
    }

    /// A DLM request or conversion failed; `handle`, if it is still held in some mode, goes.
    mutating func failed(_ ino: UInt64, handle: LockHandle?) -> Directive? {
        guard var entry = entries[ino], entry.hold == .acquiring else { return nil }
        defer { store(entry, ino) }
        failures += 1
        guard let handle else {
            entry.hold = nil
            return nil
        }
        entry.hold = .releasing
        return .unlock(ino, handle)
    }

    mutating func deposited(_ ino: UInt64) -> Directive? {
        guard var entry = entries[ino], case .givingBack(let handle, let thenShared)? = entry.hold else { return nil }
        defer { store(entry, ino) }
        if thenShared {
            entry.hold = .acquiring
            return .convertToShared(ino, handle)
        }
        entry.hold = .releasing
        return .unlock(ino, handle)
    }

    mutating func released(_ ino: UInt64) {
        guard var entry = entries[ino], entry.hold == .releasing else { return }
        entry.hold = nil
        store(entry, ino)
    }

    /// The DLM lock is gone (this node was fenced): so are the locks kept under it, as a dead node's go.
    mutating func lost(_ ino: UInt64) {
        _ = local.release(ino: ino, node: node)
        idleSince[ino] = nil
        guard var entry = entries[ino] else { return }
        failures += 1
        entry.hold = nil
        store(entry, ino)
    }

    // MARK: other nodes

    /// Another node asked for the DLM lock this node holds in EX.
    mutating func blocked(_ ino: UInt64) -> Directive? {
        guard let entry = entries[ino] else { return nil }
        switch entry.hold {
        case .delegated?:
            return giveBack(ino, thenShared: false)
        case .acquiring?:
            entries[ino]!.recallWanted = true
            return nil
        default:
            return nil
        }
    }

    /// A new coordinator: it knows nothing of what nodes keep, so everything kept goes back to it.
    mutating func coordinatorChanged() -> [Directive] {
        entries.keys.sorted().compactMap { ino in
            if case .delegated? = entries[ino]?.hold { giveBack(ino, thenShared: false) } else { nil }
        }
    }

    /// The handle of the EX lock under which this node keeps `ino`'s locks.
    func delegation(_ ino: UInt64) -> LockHandle? {
        if case .delegated(let handle)? = entries[ino]?.hold { handle } else { nil }
    }

    // MARK: bookkeeping

    private mutating func giveBack(_ ino: UInt64, thenShared: Bool) -> Directive? {
        idleSince[ino] = nil
        guard let handle = delegation(ino) else { return nil }
        let locks = local.locks(on: ino)
        _ = local.release(ino: ino, node: node)
        entries[ino]!.hold = .givingBack(handle, thenShared: thenShared)
        return .deposit(ino, handle, locks, thenShared: thenShared)
    }

    /// An entry with no hold and no call on its way is forgotten, so the table does not grow with every file
    /// ever locked.
    private mutating func store(_ entry: Entry, _ ino: UInt64) {
        entries[ino] = entry.hold == nil && entry.centralCalls == 0 ? nil : entry
    }
}
