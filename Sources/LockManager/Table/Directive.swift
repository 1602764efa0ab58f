/// Why a request did not end granted.
public enum LockError: Error, Hashable, Sendable, CustomStringConvertible {
    /// NOQUEUE request that conflicts.
    case wouldBlock
    /// This request was chosen as the victim of a deadlock (conversion deadlock included).
    case deadlock
    /// The request was stamped with an epoch that is not the master's current one.
    case staleEpoch(current: Epoch)
    case unknownLock
    case duplicateLock
    /// Convert or unlock of a lock that is not granted (or already converting).
    case notGranted
    case timedOut
    case cancelled
    /// The lock's holder lost it: its node was fenced or purged.
    case fenced
    /// Transport-level failures seen by a client.
    case unauthenticated
    case disconnected
    case protocolError(String)
    /// The master refused what would take this node past one of its limits (locks, name bytes).
    case limitReached(String)

    public var description: String {
        switch self {
        case .wouldBlock: "would block (NOQUEUE)"
        case .deadlock: "deadlock: this request was chosen as victim"
        case .staleEpoch(let e): "stale epoch (master is at epoch \(e))"
        case .unknownLock: "unknown lock"
        case .duplicateLock: "duplicate lock id"
        case .notGranted: "lock not granted"
        case .timedOut: "timed out"
        case .cancelled: "cancelled"
        case .fenced: "fenced: this node lost its locks"
        case .unauthenticated: "peer failed authentication"
        case .disconnected: "disconnected from the lock master"
        case .protocolError(let s): "protocol error: \(s)"
        case .limitReached(let s): "refused by the lock master: \(s)"
        }
    }
}

/// What the table asks its shell to do after an event. Every request ends with exactly one of
/// `.granted` (new lock or conversion), `.refused` (including timeouts and cancels), for its lock id.
public enum LockDirective: Hashable, Sendable {
    /// Completion ("AST"): the request or conversion is granted; carries the resource's value block.
    case granted(LockID, owner: LockOwner, resource: String, mode: LockMode, valueBlock: ValueBlock)
    /// The request ended without a grant. For a failed conversion the lock stays at its old mode.
    case refused(LockID, owner: LockOwner, error: LockError)
    /// Blocking callback ("BAST"): a holder blocks a waiter that wants `blocked`.
    case blocking(LockID, owner: LockOwner, resource: String, blocked: LockMode)
    /// An unlock completed.
    case released(LockID, owner: LockOwner)
    /// CONVDEADLK: a converting lock's granted mode was demoted to NL to break a conversion
    /// deadlock; the conversion still waits and ends with its own grant or refusal.
    case demoted(LockID, owner: LockOwner, resource: String)
}
