/// One `MetadataService` call as a value, so it can travel to the node that owns the metadata.
public enum MetadataCall: Sendable, Equatable {
    case lookup(parent: UInt64, name: [UInt8])
    case attributes(ino: UInt64)
    case setAttributes(ino: UInt64, changes: AttributeChanges)
    case createNode(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, symlinkTarget: [UInt8]?, caller: Caller)
    case readlink(ino: UInt64)
    case link(ino: UInt64, newParent: UInt64, newName: [UInt8])
    case unlink(parent: UInt64, name: [UInt8])
    case rmdir(parent: UInt64, name: [UInt8])
    case rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], mode: RenameMode)
    case readdir(ino: UInt64, cookie: Int64, limit: Int, plus: Bool)
    case setXattr(ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool)
    case getXattr(ino: UInt64, name: [UInt8])
    case listXattrs(ino: UInt64)
    case removeXattr(ino: UInt64, name: [UInt8])
    case statistics
    case opened(ino: UInt64)
    case released(ino: UInt64, handle: UInt64)
    case mapping(ino: UInt64, range: Range<Int64>)
    case prepareWrite(ino: UInt64, range: Range<Int64>)
    case completeWrite(ino: UInt64, filled: [Range<Int64>], end: Int64)
    case fallocate(ino: UInt64, range: Range<Int64>, mode: FallocateMode)
    case commit
    case sync(reportingTo: UInt64?)
    case openFiles
    case lockConflict(FileLock)
    case setLock(FileLock, wait: UInt64?)
    case cancelLockWait(wait: UInt64)
    case unlock(ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: UInt64)
    case releaseRecordLocks(ino: UInt64, owner: UInt64)
    case fileLocks
    case reclaimLocks([FileLock])
    case withdrawLocks(ino: UInt64)
    case depositLocks(ino: UInt64, [FileLock])
    case lockDelegations
    case reclaimOpenFiles([OpenHandle])

    public var kind: MetadataCallKind {
        switch self {
        case .lookup: .lookup
        case .attributes: .attributes
        case .setAttributes: .setAttributes
        case .createNode: .createNode
        case .readlink: .readlink
        case .link: .link
        case .unlink: .unlink
        case .rmdir: .rmdir
        case .rename: .rename
        case .readdir: .readdir
        case .setXattr: .setXattr
        case .getXattr: .getXattr
        case .listXattrs: .listXattrs
        case .removeXattr: .removeXattr
        case .statistics: .statistics
        case .opened: .opened
        case .released: .released
        case .mapping: .mapping
        case .prepareWrite: .prepareWrite
        case .completeWrite: .completeWrite
        case .fallocate: .fallocate
        case .commit: .commit
        case .sync: .sync
        case .openFiles: .openFiles
        case .lockConflict: .lockConflict
        case .setLock: .setLock
        case .cancelLockWait: .cancelLockWait
        case .unlock: .unlock
        case .releaseRecordLocks: .releaseRecordLocks
        case .fileLocks: .fileLocks
        case .reclaimLocks: .reclaimLocks
        case .withdrawLocks: .withdrawLocks
        case .depositLocks: .depositLocks
        case .lockDelegations: .lockDelegations
        case .reclaimOpenFiles: .reclaimOpenFiles
        }
    }

    /// Runs the call of `node` on `service` (on the node that owns the metadata).
    func perform(on service: any MetadataService, for node: UInt32) throws(Errno) -> MetadataResult {
        switch self {
        case .lookup(let parent, let name):
            return .attributes(try service.lookup(parent: parent, name: name))
        case .attributes(let ino):
            return .attributes(try service.attributes(ino))
        case .setAttributes(let ino, let changes):
            return .attributes(try service.setAttributes(ino, changes))
        case .createNode(let parent, let name, let mode, let rdev, let symlinkTarget, let caller):
            return .attributes(try service.createNode(parent: parent, name: name, mode: mode, rdev: rdev,
                                                      symlinkTarget: symlinkTarget, caller: caller))
        case .readlink(let ino):
            return .bytes(try service.readlink(ino))
        case .link(let ino, let newParent, let newName):
            return .attributes(try service.link(ino, newParent: newParent, newName: newName))
        case .unlink(let parent, let name):
            try service.unlink(parent: parent, name: name)
        case .rmdir(let parent, let name):
            try service.rmdir(parent: parent, name: name)
        case .rename(let parent, let name, let newParent, let newName, let mode):
            try service.rename(parent: parent, name: name, newParent: newParent, newName: newName, mode: mode)
        case .readdir(let ino, let cookie, let limit, let plus):
            return .entries(try service.readdir(ino, after: cookie, limit: limit, plus: plus))
        case .setXattr(let ino, let name, let value, let create, let replace):
            try service.setXattr(ino, name: name, value: value, create: create, replace: replace)
        case .getXattr(let ino, let name):
            return .bytes(try service.getXattr(ino, name: name))
        case .listXattrs(let ino):
            return .names(try service.listXattrs(ino))
        case .removeXattr(let ino, let name):
            try service.removeXattr(ino, name: name)
        case .statistics:
            return .statistics(try service.statistics())
        case .opened(let ino):
            return .handle(try service.opened(ino, by: node))
        case .released(let ino, let handle):
            try service.released(ino, handle: handle, by: node)
        case .mapping(let ino, let range):
            let (size, segments) = try service.mapping(ino, range)
            return .mapping(size: size, segments: segments)
        case .prepareWrite(let ino, let range):
            return .segments(try service.prepareWrite(ino, range))
        case .completeWrite(let ino, let filled, let end):
            try service.completeWrite(ino, filled: filled, end: end)
        case .fallocate(let ino, let range, let mode):
            try service.fallocate(ino, range, mode: mode)
        case .commit:
            try service.commit()
        case .sync(let handle):
            try service.sync(reportingTo: handle)
        case .openFiles:
            return .openFiles(try service.openFiles())
        case .lockConflict(var request):
            request.owner.node = node
            return .fileLock(try service.lockConflict(request))
        case .setLock(var request, let wait):
            request.owner.node = node
            return .granted(try service.setLock(request, wait: wait))
        case .cancelLockWait(let wait):
            try service.cancelLockWait(wait)
        case .unlock(let ino, let kind, let range, let owner):
            try service.unlock(ino, kind: kind, range: range, owner: FileLockOwner(node: node, owner: owner))
        case .releaseRecordLocks(let ino, let owner):
            try service.releaseRecordLocks(ino, owner: FileLockOwner(node: node, owner: owner))
        case .fileLocks:
            return .fileLocks(try service.fileLocks())
        case .reclaimLocks(let locks):
            try service.reclaimLocks(locks.map { lock in
                var lock = lock
                lock.owner.node = node
                return lock
            }, by: node)
        case .withdrawLocks(let ino):
            return .fileLocks(try service.withdrawLocks(ino, by: node))
        case .depositLocks(let ino, let locks):
            try service.depositLocks(ino, locks.map { lock in
                var lock = lock
                lock.owner.node = node
                return lock
            }, by: node)
        case .lockDelegations:
            return .delegations(try service.lockDelegations())
        case .reclaimOpenFiles(let files):
            try service.reclaimOpenFiles(files, by: node)
        }
        return .done
    }
}

extension MetadataCall {
    /// What a call that takes effect once answered, read again without changing anything: its change was
    /// committed, and its answer lost with the coordinator that made it.
    func answerAgain(on service: any MetadataService) throws(Errno) -> MetadataResult {
        switch self {
        case .createNode(let parent, let name, _, _, _, _):
            return .attributes(try service.lookup(parent: parent, name: name))
        case .link(_, let newParent, let newName):
            return .attributes(try service.lookup(parent: newParent, name: newName))
        default:
            return .done
        }
    }
}

/// Which call a message carries; the number is its code on the wire and must never change meaning.
public enum MetadataCallKind: UInt16, Sendable, CaseIterable {
    case lookup = 1
    case attributes = 2
    case setAttributes = 3
    case createNode = 4
    case readlink = 5
    case link = 6
    case unlink = 7
    case rmdir = 8
    case rename = 9
    case readdir = 10
    case setXattr = 11
    case getXattr = 12
    case listXattrs = 13
    case removeXattr = 14
    case statistics = 15
    case opened = 16
    case released = 17
    case mapping = 18
    case prepareWrite = 19
    case completeWrite = 20
    case fallocate = 21
    case commit = 22
    case sync = 23
    case openFiles = 24
    case lockConflict = 25
    case setLock = 26
    case cancelLockWait = 27
    case unlock = 28
    case releaseRecordLocks = 29
    case fileLocks = 30
    case reclaimLocks = 31
    case withdrawLocks = 32
    case depositLocks = 33
    case lockDelegations = 34
    case reclaimOpenFiles = 35
}

extension MetadataCallKind {
    /// Whether running the call a second time would answer or change otherwise than the first did: a
    /// create, a link, a removal, a rename, an xattr set with "create" or removed. The coordinator records
    /// these requests in their change's transaction and answers one sent again (after a failover) from
    /// what is there. Every other call may run again: reads; the file-lock calls (the same bytes for the same
    /// owner); attribute changes, allocations and write completions (the same values again); a release (of a
    /// handle already closed, nothing); an open (a second handle, at a coordinator that lost the first with
    /// its memory); a sync (again, though an error of the first is then not told).
    public var takesEffectOnce: Bool {
        switch self {
        case .createNode, .link, .unlink, .rmdir, .rename, .setXattr, .removeXattr: true
        default: false
        }
    }
}

/// What a call answers when it succeeds; which case is fixed by the call's kind.
public enum MetadataResult: Sendable, Equatable {
    case done
    case attributes(InodeAttributes)
    case bytes([UInt8])
    case names([[UInt8]])
    case entries([DirectoryEntry])
    case statistics(VolumeStatistics)
    case handle(UInt64)
    case mapping(size: UInt64, segments: [FileSegment])
    case segments([FileSegment])
    case openFiles([OpenFile])
    case fileLock(FileLock?)
    case granted(Bool)
    case fileLocks([FileLock])
    case delegations([DelegatedInode])
}

/// Names one request across the cluster: the node that sent it and that node's sequence number. A reply
/// carries its request's id; a server that remembers each node's latest results (for exactly-once retries
/// after a failover) keys them by it.
public struct MetadataRequestID: Sendable, Hashable, CustomStringConvertible {
    public var node: UInt32
    public var sequence: UInt64

    public init(node: UInt32, sequence: UInt64) {
        self.node = node
        self.sequence = sequence
    }

    public var description: String { "\(node):\(sequence)" }
}
