import CSVFS
import Dispatch
import Glibc
import Primitives

/// The file locks this node's processes hold, as the coordinator granted them. The coordinator keeps its
/// table in memory only, so after a failover every node tells the new one what it holds (its reclaim), before
/// that one grants anything.
///
/// Kept from the answers the node got, in the order it got them; two threads of one process racing to lock
/// and unlock the same bytes could see their answers swapped here, which only a failover at that moment
/// would expose.
final class HeldFileLocks: Sendable {
    private let table = Locked(FileLockTable())
    /// Counts the coordinators this node has followed: a reclaim still being sent to one that is gone stops.
    private let generation = Locked(0)
    private let node: UInt32

    init(node: UInt32) {
        self.node = node
    }

    var all: [FileLock] { table.withLock { $0.locks } }

    func granted(_ lock: FileLock) {
        table.withLock { _ = $0.lock(lock, wait: nil) }
    }

    func unlocked(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) {
        table.withLock { _ = $0.unlock(ino: ino, kind: kind, range: range, owner: owner) }
    }

    func closed(_ ino: UInt64, owner: FileLockOwner) {
        table.withLock { _ = $0.releaseRecordLocks(ino: ino, owner: owner) }
    }

    func released(handle: UInt64) {
        table.withLock { _ = $0.release(handle: handle, node: node) }
    }

    func locks(on ino: UInt64) -> [FileLock] { table.withLock { $0.locks(on: ino) } }

    /// The node keeps the locks of `ino` itself now (`FileLockDelegation`): a new coordinator hears them from it
    /// when it gives them back, not in a reclaim.
    func withdrawn(_ ino: UInt64) {
        table.withLock { _ = $0.release(ino: ino, node: node) }
    }

    /// The node gives back the locks of `ino` it kept: they are the coordinator's to keep again.
    func deposited(_ ino: UInt64, _ locks: [FileLock]) {
        table.withLock { table in
            _ = table.release(ino: ino, node: node)
            for lock in locks { _ = table.lock(lock, wait: nil) }
        }
    }

    /// A new coordinator was elected (or this node stopped following one): reclaims still being sent go stale.
    @discardableResult
    func coordinatorChanged() -> Int { generation.withLock { $0 += 1; return $0 } }

    /// Tells the coordinator that `generation` names what this node holds, after `first` (what must reach it
    /// before the node counts as heard), retrying until it has heard it or another coordinator took its place.
    func reclaim(from remote: RemoteMetadataService, generation expected: Int,
                 first: @escaping @Sendable () throws(Errno) -> Void) {
        DispatchQueue.global().async { [self] in
            while generation.withLock({ $0 }) == expected {
                do throws(Errno) {
                    try first()
                    try remote.reclaimLocks(all, by: nil)
                    return
                } catch {
                    usleep(50_000)
                }
            }
        }
    }
}
