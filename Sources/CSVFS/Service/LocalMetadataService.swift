/// The metadata service on the node that owns the volume's metadata: calls go straight to the SQLite store,
/// one at a time.
public final class LocalMetadataService: MetadataService, @unchecked Sendable {
    // @unchecked: the store is reached only inside `lock`.
    private let store: MetadataStore
    private let lock = Lock()
    private let syncLock = Lock()
    private let lun: FileDescriptor
    /// Every flush of the LUN this service makes, shared by the syncs and the writes that wait for one.
    private let flushes: SharedFlush
    /// The cluster node this service runs on: the opener of what it opens for its own mount.
    public let node: UInt32
    /// Every node's file locks. In memory: they live as long as the processes that hold them, and after a
    /// failover the nodes that hold them tell the next coordinator.
    private let locks = FileLocks()
    /// The inodes an earlier owner left unlinked are deleted once the nodes that may still have them open
    /// have said so (the file-lock recovery's window: they tell their open files before their locks).
    private var orphansAwaitRecovery: Bool

    init(store: MetadataStore, lun: FileDescriptor, node: UInt32, orphansAwaitRecovery: Bool = false) {
        self.store = store
        self.lun = lun
        flushes = SharedFlush { () throws(Errno) in try lun.dataSync() }
        self.node = node
        self.orphansAwaitRecovery = orphansAwaitRecovery
    }

    /// Opens the volume's metadata database on the LUN and reclaims the files left unlinked but open by an
    /// earlier owner. Only the one process that owns the metadata may call it: one that claimed the LUN
    /// alone, or the cluster's coordinator while it holds the role.
    /// A coordinator taking over from another (`takingOver`) keeps the orphans until the other nodes have told
    /// it which files they have open: one of them may be reading an unlinked file.
    public static func open(device: LUNDevice, superblock: Superblock, node: UInt32 = 0,
                            takingOver: Bool = false, epoch: VolumeEpoch? = nil) throws -> LocalMetadataService {
        let store = try MetadataStore.open(lun: device.fd, superblock: superblock, epoch: epoch)
        if !takingOver {
            do {
                try store.reclaimOrphans()
            } catch {
                store.close()
                throw error
            }
        }
        return LocalMetadataService(store: store, lun: device.fd, node: node, orphansAwaitRecovery: takingOver)
    }

    private func locked<R>(_ body: (MetadataStore) throws(Errno) -> R) throws(Errno) -> R {
        try lock.withLock { () throws(Errno) -> R in
            defer { reclaimOrphansOnceRecovered() }
            store.servedRequest = ServedRequest.current
            defer { store.servedRequest = nil }
            return try body(store)
        }
    }

    /// Under `lock`, after a call (the first ones of a new coordinator are the nodes' reclaims).
    private func reclaimOrphansOnceRecovered() {
        guard orphansAwaitRecovery, !locks.recovering else { return }
        do throws(Errno) {
            try store.reclaimOrphans()
            orphansAwaitRecovery = false
        } catch {
            // Only space waits: the next call tries again.
        }
    }

    public func lookup(parent: UInt64, name: [UInt8]) throws(Errno) -> InodeAttributes {
        try locked { (store) throws(Errno) in try store.lookup(parent: parent, name: name) }
    }

    public func attributes(_ ino: UInt64) throws(Errno) -> InodeAttributes {
        try locked { (store) throws(Errno) in try store.attributes(ino) }
    }

    public func setAttributes(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes {
        try locked { (store) throws(Errno) in try store.setAttributes(ino, changes) }
    }

    public func createNode(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, symlinkTarget: [UInt8]?,
                           caller: Caller) throws(Errno) -> InodeAttributes {
        try locked { (store) throws(Errno) in
            try store.createNode(parent: parent, name: name, mode: mode, rdev: rdev, symlinkTarget: symlinkTarget, caller: caller)
        }
    }

    public func readlink(_ ino: UInt64) throws(Errno) -> [UInt8] {
        try locked { (store) throws(Errno) in try store.readlink(ino) }
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(Errno) -> InodeAttributes {
        try locked { (store) throws(Errno) in try store.link(ino: ino, newParent: newParent, newName: newName) }
    }

    public func unlink(parent: UInt64, name: [UInt8]) throws(Errno) {
        try locked { (store) throws(Errno) in try store.unlink(parent: parent, name: name) }
    }

    public func rmdir(parent: UInt64, name: [UInt8]) throws(Errno) {
        try locked { (store) throws(Errno) in try store.rmdir(parent: parent, name: name) }
    }

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], mode: RenameMode) throws(Errno) {
        try locked { (store) throws(Errno) in
            try store.rename(parent: parent, name: name, newParent: newParent, newName: newName, mode: mode)
        }
    }

    public func readdir(_ ino: UInt64, after cookie: Int64, limit: Int, plus: Bool) throws(Errno) -> [DirectoryEntry] {
        try locked { (store) throws(Errno) in try store.readdir(ino, after: cookie, limit: limit, plus: plus) }
    }

    public func setXattr(_ ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool) throws(Errno) {
        try locked { (store) throws(Errno) in try store.setXattr(ino, name: name, value: value, create: create, replace: replace) }
    }

    public func getXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) -> [UInt8] {
        try locked { (store) throws(Errno) in try store.getXattr(ino, name: name) }
    }

    public func listXattrs(_ ino: UInt64) throws(Errno) -> [[UInt8]] {
        try locked { (store) throws(Errno) in try store.listXattrs(ino) }
    }

    public func removeXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) {
        try locked { (store) throws(Errno) in try store.removeXattr(ino, name: name) }
    }

    public func statistics() throws(Errno) -> VolumeStatistics {
        lock.withLock { store.statistics() }
    }

    public func opened(_ ino: UInt64, by node: UInt32?) throws(Errno) -> UInt64 {
        lock.withLock { store.opened(ino, node: node ?? self.node) }
    }

    public func openFiles() throws(Errno) -> [OpenFile] {
        try locked { (store) throws(Errno) in try store.openFileList() }
    }

    public func reclaimOpenFiles(_ files: [OpenHandle], by node: UInt32?) throws(Errno) {
        try locked { (store) throws(Errno) in try store.reclaimOpened(files, node: node ?? self.node) }
    }

    public func released(_ ino: UInt64, handle: UInt64, by node: UInt32?) throws(Errno) {
        // The handle is closed even when deleting an orphan fails, so its locks go either way.
        defer { locks.release(handle: handle, node: node ?? self.node) }
        try locked { (store) throws(Errno) in try store.released(ino, handle: handle) }
    }

    public func mapping(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> (size: UInt64, segments: [FileSegment]) {
        try locked { (store) throws(Errno) in try store.mapping(ino, range) }
    }

    public func prepareWrite(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> [FileSegment] {
        try locked { (store) throws(Errno) in try store.prepareWrite(ino, range) }
    }

    /// Blocks become written only once their data is durable: a power cut that kept the commit marking them
    /// written and lost their data would show what they held before, bytes of a file deleted earlier. So that
    /// commit waits for a flush of the LUN that started after this call: the caller, on whichever node, wrote
    /// the data before calling, and a flush covers every write the LUN completed before it began. Concurrent
    /// writes share their flushes. The size commits with the marking, but alone it would be harmless: blocks
    /// still unwritten read as zeros.
    public func completeWrite(_ ino: UInt64, filled: [Range<Int64>], end: Int64) throws(Errno) {
        if !filled.isEmpty {
            do throws(Errno) {
                try flushes.run()
            } catch {
                lock.withLock { store.flushFailed(error) }
                throw error
            }
        }
        try locked { (store) throws(Errno) in try store.completeWrite(ino, filled: filled, end: end) }
    }

    public func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno) {
        try locked { (store) throws(Errno) in try store.fallocate(ino, range, mode: mode) }
    }

    public func commit() throws(Errno) {
        try locked { (store) throws(Errno) in try store.commit() }
    }

    /// Database, WAL and file data all live in the LUN: one flush of it makes all of them durable.
    /// One sync at a time; the device flush runs outside the store lock, so metadata operations (and the FUSE
    /// reader that runs them) do not stall for the length of a flush.
    /// A failed flush is noted for the open files it covered, so each one's next fsync reports it, whoever ran
    /// the flush (the once-a-second one has nobody to tell).
    public func sync(reportingTo handle: UInt64?) throws(Errno) {
        var flushError: Errno?
        try syncLock.withLock { () throws(Errno) in
            let ticket = try locked { (store) throws(Errno) in try store.beginSync() }
            if ticket.needsFlush {
                do throws(Errno) {
                    try flushes.run()
                } catch {
                    lock.withLock { store.flushFailed(ticket, error) }
                    flushError = error
                    return
                }
            }
            try locked { (store) throws(Errno) in try store.endSync(ticket) }
        }
        let unreported = handle.flatMap { handle in lock.withLock { store.takeFlushError(handle: handle) } }
        if let error = flushError ?? unreported { throw error }
    }

    // A lock call of this node's own mount that may sleep (for a grant, or through a new coordinator's wait for
    // the reclaims) first hands the FUSE reader role over, so the mount's other requests go on meanwhile.

    public func lockConflict(_ request: FileLock) throws(Errno) -> FileLock? {
        if locks.recovering { FUSERequestThread.willWait() }
        return locks.conflict(with: request)
    }

    public func setLock(_ request: FileLock, wait: UInt64?) throws(Errno) -> Bool {
        if wait != nil || locks.recovering { FUSERequestThread.willWait() }
        return try locks.lock(request, wait: wait)
    }

    public func cancelLockWait(_ wait: UInt64) throws(Errno) { locks.cancel(wait: wait) }

    public func unlock(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) throws(Errno) {
        locks.unlock(ino, kind: kind, range: range, owner: owner)
    }

    public func releaseRecordLocks(_ ino: UInt64, owner: FileLockOwner) throws(Errno) {
        locks.releaseRecordLocks(ino, owner: owner)
    }

    public func fileLocks() throws(Errno) -> [FileLock] { locks.locks }

    public func reclaimLocks(_ locks: [FileLock], by node: UInt32?) throws(Errno) {
        self.locks.reclaim(locks, node: node ?? self.node)
    }

    public func withdrawLocks(_ ino: UInt64, by node: UInt32?) throws(Errno) -> [FileLock] {
        if locks.recovering { FUSERequestThread.willWait() }
        return try locks.withdraw(ino, node: node ?? self.node)
    }

    public func depositLocks(_ ino: UInt64, _ locks: [FileLock], by node: UInt32?) throws(Errno) {
        self.locks.deposit(ino, locks, node: node ?? self.node)
    }

    public func lockDelegations() throws(Errno) -> [DelegatedInode] { locks.delegations }

    /// This service is a new coordinator's: the locks of `awaiting` (the other nodes alive now) are kept only
    /// by those nodes until they reclaim them, so no lock is granted until they have, or `limit` has passed.
    public func awaitLockReclaims(from awaiting: Set<UInt32>, limit: Duration) {
        locks.beginRecovery(awaiting: awaiting, limit: limit)
    }

    /// The cluster's members now: a node that left (the coordination backend drops a node only once it is
    /// fenced) loses its file locks, and is no longer awaited.
    public func membersChanged(_ members: Set<UInt32>) { locks.membersChanged(members) }

    /// Whether lock calls wait for the nodes' reclaims now.
    public var recoveringLocks: Bool { locks.recovering }

    /// Wakes every caller waiting for a lock, answered "still waiting": this service is about to close.
    public func stopLockWaits() { locks.stopWaits() }

    /// Checkpoints and leaves the database with nothing to replay; the service must not be used afterwards.
    public func close() {
        lock.withLock { store.close() }
    }
}

extension LocalMetadataService: AppliedRequests {
    public func wasApplied(_ id: MetadataRequestID) throws(Errno) -> Bool {
        try locked { (store) throws(Errno) in try store.wasApplied(id) }
    }
}
