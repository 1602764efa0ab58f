import CSVFS
import LockManager

/// The DLM locks a node holds on its inodes, as a pure state machine: events in, directives out, no I/O.
///
/// One lock per inode, `i<ino>`, covers its attributes and, for a directory, its names. PR is a licence to
/// cache them; EX is held by the node that changes them (and kept afterwards, as a licence too, until
/// another node asks). A node asks for PR without waiting when it reads an inode; it waits for EX before it
/// changes one. When another node wants a lock, it is given up as soon as no change of this node holds it:
/// what it protected is dropped first (the node's cache and the kernel's attributes), then it is unlocked.
///
/// Read-before-grant: metadata read before a licence was granted may already be stale by the grant (another
/// node changed it in between). So every grant, every release and every change bumps one event counter; a
/// value read after ticket `t` may be cached only if the licence was granted at or before `t`, nothing of
/// this node has changed the inode since `t`, and no change of it is in progress.
struct InodeLicenceTable {
    enum State: Equatable {
        /// Asked for; `mode` is what was asked.
        case requesting(LockMode)
        /// Converting PR to EX for a change: nothing is cached meanwhile.
        case converting
        case held(LockMode, grantedAt: UInt64)
        /// Being given up: what it protected is dropped, the unlock is on its way.
        case releasing
    }

    struct Entry {
        var state: State
        var handle: LockHandle?
        /// Changes of this node in progress under the EX lock.
        var changes = 0
        /// Event of the last change's start or end.
        var changedAt: UInt64 = 0
        /// Another node waits for the lock: give it up when no change holds it.
        var releaseWanted = false
        /// The kernel evicted the inode: give the lock up when no change holds it.
        var forgotten = false
    }

    enum Directive: Equatable {
        case request(UInt64, LockMode)
        /// Convert the held PR to EX (what it protected is already dropped).
        case convert(UInt64, LockHandle)
        /// Drop what the lock protected (`invalidate`: also the kernel's attributes), then unlock.
        case release(UInt64, LockHandle, invalidate: Bool)
    }

    /// What a change must do to hold the inode's EX lock.
    enum ChangeStep: Equatable {
        /// It holds it now (counted in `changes` until `finishChange`).
        case proceed
        /// Wait for the table to change (a grant, a release), then ask again; run `directive` first, if any.
        case wait(Directive?)
    }

    private(set) var events: UInt64 = 0
    private(set) var entries: [UInt64: Entry] = [:]

    private mutating func bump() -> UInt64 {
        events += 1
        return events
    }

    /// A new event, for a mark no value read before it passes.
    mutating func touch() -> UInt64 { bump() }

    /// Whether a value of `ino` read after `ticket` may be cached now.
    func isLicensed(_ ino: UInt64, since ticket: UInt64) -> Bool {
        guard let entry = entries[ino], case .held(_, let grantedAt) = entry.state else { return false }
        return grantedAt <= ticket && entry.changes == 0 && entry.changedAt <= ticket
    }

    /// Whether a licence of `ino` is still being asked for.
    func isRequesting(_ ino: UInt64) -> Bool {
        if case .requesting? = entries[ino]?.state { true } else { false }
    }

    /// The node reads `ino`: ask for a licence if it has none, without waiting for it. A new inode this node
    /// just made is asked for in EX, since its maker usually goes on to change it (write, mkdir inside).
    mutating func want(_ ino: UInt64, mode: LockMode = .pr) -> Directive? {
        if entries[ino] != nil {
            entries[ino]!.forgotten = false
            return nil
        }
        entries[ino] = Entry(state: .requesting(mode))
        return .request(ino, mode)
    }

    mutating func startChange(_ ino: UInt64) -> ChangeStep {
        guard var entry = entries[ino] else {
            entries[ino] = Entry(state: .requesting(.ex))
            return .wait(.request(ino, .ex))
        }
        switch entry.state {
        case .held(.ex, _):
            entry.changes += 1
            entry.changedAt = bump()
            entries[ino] = entry
            return .proceed
        case .held(_, _):
            guard let handle = entry.handle else { return .wait(nil) }
            // What PR protected is dropped before converting: the conversion may be demoted to NL (CONVDEADLK)
            // while another node changes the inode, and nothing of ours may be cached across that.
            entry.state = .converting
            entries[ino] = entry
            _ = bump()
            return .wait(.convert(ino, handle))
        case .requesting, .converting, .releasing:
            return .wait(nil)
        }
    }

    /// Starts a change only if it can proceed at once (the EX lock is held here); nothing otherwise.
    mutating func joinChange(_ ino: UInt64) -> Bool {
        guard case .held(.ex, _)? = entries[ino]?.state else { return false }
        return startChange(ino) == .proceed
    }

    mutating func finishChange(_ ino: UInt64) -> Directive? {
        guard var entry = entries[ino], entry.changes > 0 else { return nil }
        entry.changes -= 1
        entry.changedAt = bump()
        entries[ino] = entry
        return entry.changes == 0 ? releaseIfDue(ino) : nil
    }

    /// A change gave up waiting (its deadline passed): a lock granted for it and wanted elsewhere goes.
    mutating func abandonedChange(_ ino: UInt64) -> Directive? {
        guard let entry = entries[ino], entry.changes == 0 else { return nil }
        return releaseIfDue(ino)
    }

    mutating func granted(_ ino: UInt64, handle: LockHandle, mode: LockMode) -> Directive? {
        guard var entry = entries[ino] else { return .release(ino, handle, invalidate: false) }
        let wasForChange: Bool
        switch entry.state {
        case .requesting(let asked): wasForChange = asked == .ex
        case .converting: wasForChange = true
        default: return nil
        }
        entry.state = .held(mode, grantedAt: bump())
        entry.handle = handle
        entries[ino] = entry
        // A lock asked for a change is kept for it even if wanted elsewhere already: the change releases it.
        return wasForChange ? nil : releaseIfDue(ino)
    }

    /// A request or conversion failed (timed out, refused, disconnected).
    mutating func failed(_ ino: UInt64) -> Directive? {
        guard let entry = entries[ino] else { return nil }
        switch entry.state {
        case .requesting:
            entries[ino] = nil
            return nil
        case .converting:
            // The lock may still be PR at the master; give it up rather than guess.
            guard let handle = entry.handle else {
                entries[ino] = nil
                return nil
            }
            entries[ino]!.state = .releasing
            _ = bump()
            return .release(ino, handle, invalidate: true)
        default:
            return nil
        }
    }

    /// Another node waits for the lock.
    mutating func blocked(_ ino: UInt64) -> Directive? {
        guard entries[ino] != nil else { return nil }
        entries[ino]!.releaseWanted = true
        return releaseIfDue(ino)
    }

    mutating func forgotten(_ ino: UInt64) -> Directive? {
        guard entries[ino] != nil else { return nil }
        entries[ino]!.forgotten = true
        return releaseIfDue(ino)
    }

    /// The unlock is done: the inode has no lock here any more.
    mutating func released(_ ino: UInt64) {
        if case .releasing? = entries[ino]?.state { entries[ino] = nil }
    }

    private mutating func releaseIfDue(_ ino: UInt64) -> Directive? {
        guard var entry = entries[ino], entry.changes == 0, entry.releaseWanted || entry.forgotten,
              case .held = entry.state, let handle = entry.handle else { return nil }
        // An evicted inode has nothing in the kernel to drop; one another node wants may.
        let invalidate = entry.releaseWanted
        entry.state = .releasing
        entries[ino] = entry
        _ = bump()
        return .release(ino, handle, invalidate: invalidate)
    }
}
