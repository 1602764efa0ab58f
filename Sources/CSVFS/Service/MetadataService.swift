/// The one protocol between the FUSE adapter and the metadata engine.
///
/// `LocalMetadataService` implements it on the node that owns the metadata (the coordinator);
/// `RemoteMetadataService` sends the same calls to it, so the FUSE code serves both roles. Every call can
/// fail, as any of them may cross the network.
public protocol MetadataService: Sendable {
    func lookup(parent: UInt64, name: [UInt8]) throws(Errno) -> InodeAttributes
    func attributes(_ ino: UInt64) throws(Errno) -> InodeAttributes
    func setAttributes(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes
    func createNode(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, symlinkTarget: [UInt8]?,
                    caller: Caller) throws(Errno) -> InodeAttributes
    func readlink(_ ino: UInt64) throws(Errno) -> [UInt8]
    func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(Errno) -> InodeAttributes
    func unlink(parent: UInt64, name: [UInt8]) throws(Errno)
    func rmdir(parent: UInt64, name: [UInt8]) throws(Errno)
    func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], mode: RenameMode) throws(Errno)
    /// Entries after `cookie` (0 starts at "."), at most about `limit` of them.
    func readdir(_ ino: UInt64, after cookie: Int64, limit: Int, plus: Bool) throws(Errno) -> [DirectoryEntry]

    func setXattr(_ ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool) throws(Errno)
    func getXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) -> [UInt8]
    func listXattrs(_ ino: UInt64) throws(Errno) -> [[UInt8]]
    func removeXattr(_ ino: UInt64, name: [UInt8]) throws(Errno)

    func statistics() throws(Errno) -> VolumeStatistics

    /// Open files keep their data after their last name goes, until `released`. The handle names one open file.
    /// `node` is the cluster node that opened it, nil for the caller's own (the coordinator learns a remote
    /// caller's from its request).
    func opened(_ ino: UInt64, by node: UInt32?) throws(Errno) -> UInt64
    /// The handle's OFD and flock locks go with it. `node` as for `opened`.
    func released(_ ino: UInt64, handle: UInt64, by node: UInt32?) throws(Errno)
    /// Every file open anywhere, per node.
    func openFiles() throws(Errno) -> [OpenFile]
    /// After a coordinator changed: the files `node` (nil: the caller's) has open, under the handles the one
    /// before gave them, told to the new one, which keeps them (and the data of those unlinked meanwhile).
    func reclaimOpenFiles(_ files: [OpenHandle], by node: UInt32?) throws(Errno)

    /// Where `range` of the file lives, and the file's size; allocates nothing.
    func mapping(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> (size: UInt64, segments: [FileSegment])
    /// Allocates the holes of `range` (as unwritten extents) and returns its segments.
    func prepareWrite(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> [FileSegment]
    /// After the data is on the LUN (written, not necessarily flushed): blocks in `filled` become written, the
    /// size grows to `end`. The marking must not become durable before the data it exposes.
    func completeWrite(_ ino: UInt64, filled: [Range<Int64>], end: Int64) throws(Errno)
    func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno)

    /// Commits what is held in memory (sizes and times of plain overwrites).
    func commit() throws(Errno)
    /// Makes everything done so far durable on the LUN. With a handle, it also throws the error of an earlier
    /// flush that failed to make that open file's changes durable, once (as Linux reports writeback errors).
    func sync(reportingTo handle: UInt64?) throws(Errno)

    // File locks (POSIX record, OFD, flock), kept for the whole cluster where the metadata is. A request's owner
    // node is the caller's, whatever the request says.

    /// The held lock that keeps `request` from being granted (F_GETLK), nil if none does.
    func lockConflict(_ request: FileLock) throws(Errno) -> FileLock?
    /// Sets `request`. Without `wait`, a conflict is EAGAIN. With a wait id (unique to this request) it waits a
    /// while: true once granted, false if still waiting (call again with the same id), EDEADLK if waiting would
    /// deadlock, EINTR once `cancelLockWait` was called with the id.
    func setLock(_ request: FileLock, wait: UInt64?) throws(Errno) -> Bool
    func cancelLockWait(_ wait: UInt64) throws(Errno)
    func unlock(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) throws(Errno)
    /// A close() by `owner`: its record locks on `ino` go. (The OFD and flock locks of an open file go at its
    /// `released`.)
    func releaseRecordLocks(_ ino: UInt64, owner: FileLockOwner) throws(Errno)
    /// Every file lock held in the cluster.
    func fileLocks() throws(Errno) -> [FileLock]
    /// After a coordinator changed: the locks the processes of `node` (nil: the caller's) hold, told to the new
    /// one, which grants no lock until every node alive when it took over has told it (or left).
    func reclaimLocks(_ locks: [FileLock], by node: UInt32?) throws(Errno)
    /// `node` (nil: the caller's) keeps the locks of `ino` itself from now on, holding the inode's DLM lock in
    /// EX: the coordinator hands the node's locks there over, or refuses with EAGAIN if another node holds one
    /// or anyone waits for one.
    func withdrawLocks(_ ino: UInt64, by node: UInt32?) throws(Errno) -> [FileLock]
    /// Gives back the locks of `ino` that `node` (nil: the caller's) kept: they replace the node's locks there.
    func depositLocks(_ ino: UInt64, _ locks: [FileLock], by node: UInt32?) throws(Errno)
    /// The inodes whose locks a node keeps itself now.
    func lockDelegations() throws(Errno) -> [DelegatedInode]
}

extension MetadataService {
    public func sync() throws(Errno) { try sync(reportingTo: nil) }
    public func opened(_ ino: UInt64) throws(Errno) -> UInt64 { try opened(ino, by: nil) }
    public func released(_ ino: UInt64, handle: UInt64) throws(Errno) { try released(ino, handle: handle, by: nil) }
}
