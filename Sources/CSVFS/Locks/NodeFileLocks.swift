/// This node's side of the cluster-wide file locks, under the FUSE adapter: the kernel's lock requests become
/// the metadata service's calls (the coordinator keeps every node's locks), and it remembers which owners may
/// hold record locks on which inode, so that a close() of a file nobody locked (nearly every close) costs no
/// call.
///
/// The remembering errs on one side only: an owner is noted before its first lock request goes out and
/// forgotten once its close() released what it held, so a close that must release something always does.
final class NodeFileLocks: Sendable {
    private struct Key: Hashable {
        var ino: UInt64
        var owner: UInt64
    }

    private struct Holders {
        var owners: Set<Key> = []
        /// The owners that locked through each open file: at its release their entries go, its OFD locks with it
        /// (the coordinator drops those itself when the file is released).
        var ownersOfHandle: [UInt64: Set<Key>] = [:]
    }

    private let service: any MetadataService
    private let node: UInt32
    private let holders = Locked(Holders())

    init(service: any MetadataService, node: UInt32) {
        self.service = service
        self.node = node
    }

    func owner(_ owner: UInt64) -> FileLockOwner { FileLockOwner(node: node, owner: owner) }

    func conflict(with request: FileLock) throws(Errno) -> FileLock? {
        try service.lockConflict(request)
    }

    /// Takes `request`, without waiting (EAGAIN on a conflict), or waiting until granted: `wait` names the wait,
    /// so that `cancel(wait:)` from the request's interrupt ends it (EINTR).
    func lock(_ request: FileLock, wait: UInt64?) throws(Errno) {
        let key = Key(ino: request.ino, owner: request.owner.owner)
        holders.withLock { holders in
            holders.owners.insert(key)
            holders.ownersOfHandle[request.handle, default: []].insert(key)
        }
        // A call lost with its coordinator is made again of the next one (`RemoteMetadataService`: every lock
        // call may run twice), so a wait goes on across a failover.
        while try !service.setLock(request, wait: wait) {}
    }

    func cancel(wait: UInt64) {
        // Best effort: if the coordinator cannot be told, the wait ends at its patience and is asked again;
        // the interrupted caller is answered then.
        try? service.cancelLockWait(wait)
    }

    func unlock(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: UInt64) throws(Errno) {
        try service.unlock(ino, kind: kind, range: range, owner: self.owner(owner))
    }

    /// A close() by `owner` (the kernel's FLUSH): POSIX drops every record lock the process holds on the file.
    func closed(_ ino: UInt64, owner: UInt64) throws(Errno) {
        let key = Key(ino: ino, owner: owner)
        guard holders.withLock({ $0.owners.contains(key) }) else { return }
        try service.releaseRecordLocks(ino, owner: self.owner(owner))
        holders.withLock { _ = $0.owners.remove(key) }
    }

    /// The last close of an open file: the coordinator drops its OFD and flock locks as it releases it.
    func released(handle: UInt64) {
        holders.withLock { holders in
            for key in holders.ownersOfHandle.removeValue(forKey: handle) ?? []
            where !holders.ownersOfHandle.values.contains(where: { $0.contains(key) }) {
                holders.owners.remove(key)
            }
        }
    }
}
