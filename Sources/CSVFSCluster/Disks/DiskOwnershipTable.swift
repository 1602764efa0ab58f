import LockManager

/// Which VM disks this node owns, as a pure state machine: events in (a call wants a disk, the DLM granted
/// or refused, another node asked, the node let go), directives out (ask the DLM, revoke, unlock). The shell,
/// `DiskOwnershipLocks`, runs the directives; every race between them replays in a unit test.
struct DiskOwnershipTable {
    enum State: Equatable {
        /// The DLM request is out. `blocked`: another node asked before the grant was seen.
        case requesting(exclusive: Bool, blocked: Bool)
        /// `revoking`: another node asked; the node is flushing the disk and will let go.
        case held(LockHandle, exclusive: Bool, revoking: Bool)
        /// The unlock is out.
        case releasing
    }

    enum Directive: Equatable {
        case request(UInt64, exclusive: Bool)
        /// Flush and forget the disk, then `release`.
        case revoke(UInt64)
        case unlock(UInt64, LockHandle)
    }

    enum Answer: Equatable {
        /// Held in the mode asked (or better).
        case held(LockHandle)
        /// Held shared while exclusive was asked: the caller lets go first (see `DiskOwnership.acquire`).
        case heldShared
        /// Wait for the next event, after running the directive if there is one.
        case wait(Directive?)
    }

    private(set) var disks: [UInt64: State] = [:]
    /// Refused or failed requests so far: a waiter that sees it change gives up with an error.
    private(set) var failures = 0

    mutating func want(_ ino: UInt64, exclusive: Bool) -> Answer {
        switch disks[ino] {
        case nil:
            disks[ino] = .requesting(exclusive: exclusive, blocked: false)
            return .wait(.request(ino, exclusive: exclusive))
        case .requesting, .releasing, .held(_, _, revoking: true):
            return .wait(nil)
        case .held(let handle, let held, revoking: false):
            return held || !exclusive ? .held(handle) : .heldShared
        }
    }

    mutating func granted(_ ino: UInt64, _ handle: LockHandle, exclusive: Bool) -> Directive? {
        guard case .requesting(_, let blocked) = disks[ino] else { return .unlock(ino, handle) }
        disks[ino] = .held(handle, exclusive: exclusive, revoking: blocked)
        return blocked ? .revoke(ino) : nil
    }

    mutating func failed(_ ino: UInt64) {
        if case .requesting = disks[ino] { disks[ino] = nil }
        failures += 1
    }

    /// Another node asked for the disk (the DLM's blocking callback).
    mutating func blocked(_ ino: UInt64) -> Directive? {
        switch disks[ino] {
        case .requesting(let exclusive, _):
            disks[ino] = .requesting(exclusive: exclusive, blocked: true)
            return nil
        case .held(let handle, let exclusive, revoking: false):
            disks[ino] = .held(handle, exclusive: exclusive, revoking: true)
            return .revoke(ino)
        default:
            return nil
        }
    }

    /// The node let go: what the ownership protected is flushed and forgotten.
    mutating func release(_ ino: UInt64) -> Directive? {
        guard case .held(let handle, _, _) = disks[ino] else { return nil }
        disks[ino] = .releasing
        return .unlock(ino, handle)
    }

    mutating func released(_ ino: UInt64) {
        if case .releasing = disks[ino] { disks[ino] = nil }
    }

    /// The DLM lock is gone without an unlock (this node was fenced): nothing is held any more.
    mutating func lost(_ ino: UInt64) {
        if case .held = disks[ino] { disks[ino] = nil }
    }

    /// The handle when the disk is held in at least that mode.
    func holding(_ ino: UInt64, exclusive: Bool) -> LockHandle? {
        guard case .held(let handle, let held, _) = disks[ino], held || !exclusive else { return nil }
        return handle
    }
}
