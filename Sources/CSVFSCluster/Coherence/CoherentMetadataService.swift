import CSVFS
import Dispatch
import LockManager
import Logging
import Primitives

/// A cluster node's metadata service as its FUSE mount and data path see it: the routed service, with the
/// DLM's inode locks around it. Every change holds the EX locks of the inodes it changes, so no other node
/// keeps a cached copy of them; reads (attributes, names, extent maps) are answered from this node's cache
/// while it holds their licence (PR or EX), and ask for the licence, without waiting, when it has none.
/// Under EX, an overwrite of written blocks inside the file asks the coordinator nothing: its map comes
/// from the cache, and its new mtime is told later, before the lock goes or anyone here looks. It is also the mount's
/// `KernelCachePolicy`: the kernel keeps attributes only under a licence, and while other nodes are
/// members it keeps no names (a name is checked with this node at every lookup, which the node answers from
/// its cache): dropping names from the kernel takes the directory's lock in the kernel, which a request
/// waiting for us may hold, while dropping attributes takes none.
public final class CoherentMetadataService: MetadataService, KernelCachePolicy {
    let inner: any MetadataService
    let licences: InodeLicences
    /// The file locks this node keeps itself, and the way to the coordinator's for the others.
    let fileLockDelegation: FileLockDelegation
    /// Which VM disks this node owns, for the raw view.
    public let diskOwnership: any DiskOwnership
    /// The images below open differencing disks, kept read-only.
    public let imageProtection: any ImageProtection
    public let notifier: KernelNotifier?
    /// Open while this node is the volume's only member: then nobody else caches or changes anything, so
    /// calls go straight to the routed service, and the kernel may cache names and attributes for a fixed
    /// second (a node that joins waits that second out).
    private let alone = AloneGate(open: true)
    /// Where the switches between alone and shared run, in order, off the membership watch's task.
    private let switches = DispatchQueue(label: "csvfs.alone-switches")
    /// How long the kernel keeps attributes under a licence; the licence's release drops them sooner.
    static let licensedSeconds = 10.0
    /// How long a listing waits for its licences; past it, what it read is answered but not kept.
    static let listingLicenceWait: Duration = .seconds(1)

    /// This node's failure-detection settings, for `csvfs status`.
    let failureDetection: FailureDetection
    /// The node's DLM client: `csvfs status` asks its master who owns the disks.
    private let client: LockClient

    init(routed: RoutedMetadataService, node: UInt32, client: LockClient, patience: CallPatience,
         failureDetection: FailureDetection, logger: Logger) {
        let notifier = KernelNotifier()
        self.failureDetection = failureDetection
        self.client = client
        inner = routed
        self.notifier = notifier
        licences = InodeLicences(client: client, notifier: notifier, patience: patience, logger: logger) {
            ino throws(Errno) in try routed.completeWrite(ino, filled: [], end: 0)
        }
        fileLockDelegation = FileLockDelegation(node: node, client: client, service: routed, logger: logger) { ino in
            routed.heldFileLocks(on: ino)
        }
        let disks = DiskOwnershipLocks(client: client, timeout: patience.timeout, logger: logger)
        diskOwnership = disks
        imageProtection = ImageProtectionLocks(client: client, logger: logger)
        client.onBlocking { [licences, fileLockDelegation] handle, _ in
            switch InodeLock.parse(handle.resource) {
            case (.metadata, let ino)?: licences.blocked(ino)
            case (.fileLocks, let ino)?: fileLockDelegation.blocked(ino)
            case (.disk, let ino)?: disks.blocked(ino)
            // Asked without queueing, by PR and CW holders alike: a refusal calls nobody back.
            case (.image, _)?: break
            case nil: break
            }
        }
        client.onFenced { [licences] in licences.fenced() }
        routed.onCoordinatorChange { [fileLockDelegation] in fileLockDelegation.coordinatorChanged() }
    }

    /// Alone: the node cache is emptied and kept empty (changes made without locks would leave it stale),
    /// then calls skip the locks. Shared: calls take the locks once those that skipped them are done.
    /// `wait`: return only once switched (at join, before the mount serves).
    func setAlone(_ value: Bool, wait: Bool = false) {
        let (alone, licences) = (alone, licences)
        let change: @Sendable () -> Void = {
            guard alone.admits != value else { return }
            if value {
                licences.startBypass()
                alone.open()
            } else {
                alone.close()
                licences.endBypass()
            }
        }
        if wait { switches.sync(execute: change) } else { switches.async(execute: change) }
    }

    /// While this node is alone, `call` made on the routed service; nil otherwise, for the locked path.
    private func whileAlone<R>(_ call: () throws(Errno) -> R) throws(Errno) -> R? {
        guard alone.enter() else { return nil }
        defer { alone.leave() }
        return try call()
    }

    /// Attributes, names and extent maps this node holds in its cache now.
    public var cached: (attributes: Int, names: Int, maps: Int) { licences.cached }

    // MARK: KernelCachePolicy

    public func ticket() -> CacheTicket { CacheTicket(licences.ticket()) }

    public func attributeTimeout(_ ino: UInt64, since ticket: CacheTicket) -> Double {
        if licences.isLicensed(ino, since: ticket.event) { return Self.licensedSeconds }
        return alone.admits ? FixedKernelCachePolicy.alone : 0
    }

    public func entryTimeout(since ticket: CacheTicket) -> Double {
        alone.admits ? FixedKernelCachePolicy.alone : 0
    }

    public func forgotten(_ ino: UInt64) { licences.forgotten(ino) }

    // MARK: reads

    public func lookup(parent: UInt64, name: [UInt8]) throws(Errno) -> InodeAttributes {
        if let done = try whileAlone({ () throws(Errno) in try inner.lookup(parent: parent, name: name) }) { return done }
        switch licences.cachedName(name, in: parent) {
        case .absent?:
            throw .noEntry
        case .inode(let ino)?:
            if let attributes = licences.cachedAttributes(ino) { return attributes }
        case nil:
            break
        }
        let ticket = licences.ticket()
        licences.want(parent)
        do {
            var attributes = try inner.lookup(parent: parent, name: name)
            if licences.hasWrittenInPlace(attributes.ino) {
                try licences.tellWrittenInPlace(attributes.ino)
                attributes = try inner.attributes(attributes.ino)
            }
            licences.want(attributes.ino)
            licences.store(name, in: parent, as: .inode(attributes.ino), readAfter: ticket)
            licences.store(attributes, readAfter: ticket)
            return attributes
        } catch {
            if error == .noEntry { licences.store(name, in: parent, as: .absent, readAfter: ticket) }
            throw error
        }
    }

    public func attributes(_ ino: UInt64) throws(Errno) -> InodeAttributes {
        if let done = try whileAlone({ () throws(Errno) in try inner.attributes(ino) }) { return done }
        try licences.tellWrittenInPlace(ino)
        if let attributes = licences.cachedAttributes(ino) { return attributes }
        let ticket = licences.ticket()
        licences.want(ino)
        let attributes = try inner.attributes(ino)
        licences.store(attributes, readAfter: ticket)
        return attributes
    }

    public func readdir(_ ino: UInt64, after cookie: Int64, limit: Int, plus: Bool) throws(Errno) -> [DirectoryEntry] {
        if let done = try whileAlone({ () throws(Errno) in try inner.readdir(ino, after: cookie, limit: limit, plus: plus) }) { return done }
        if plus { return try listing(ino, after: cookie, limit: limit) }
        let ticket = licences.ticket()
        licences.want(ino)
        let entries = try inner.readdir(ino, after: cookie, limit: limit, plus: false)
        for entry in entries where !Self.isDots(entry.name) {
            licences.store(entry.name, in: ino, as: .inode(entry.ino), readAfter: ticket)
        }
        return entries
    }

    /// A listing with attributes (`ls -l`; the mount asks for them with every listing) is read under the
    /// licences of the directory and of its entries, so that what it returns is kept here: the kernel's lookup
    /// of each entry that follows (it keeps no names while others are members) is answered from the cache.
    /// What was read before a licence was granted cannot be kept, so the entries without one are read again
    /// once they have it. Twice as many entries as the kernel asked for are read, and the licences of those
    /// that do not fit are asked for now: its next batch finds them granted and is read once.
    private func listing(_ ino: UInt64, after cookie: Int64, limit: Int) throws(Errno) -> [DirectoryEntry] {
        try licences.tellAllWrittenInPlace()
        let deadline = ContinuousClock.now + Self.listingLicenceWait
        licences.awaitLicences([ino], until: deadline)
        var ticket = licences.ticket()
        var entries = try inner.readdir(ino, after: cookie, limit: 2 * limit, plus: true)
        let children = entries.filter { !Self.isDots($0.name) }
        let unlicensed = children.prefix(limit).map(\.ino).filter { !licences.isLicensed($0, since: ticket) }
        for entry in children.dropFirst(limit) { licences.want(entry.ino) }
        if !unlicensed.isEmpty {
            licences.awaitLicences(unlicensed, until: deadline)
            ticket = licences.ticket()
            entries = try inner.readdir(ino, after: cookie, limit: 2 * limit, plus: true)
        }
        for entry in entries where !Self.isDots(entry.name) {
            licences.store(entry.name, in: ino, as: .inode(entry.ino), readAfter: ticket)
            // readdirplus hands the kernel the inodes (it will FORGET them).
            licences.want(entry.ino)
            if let attributes = entry.attributes { licences.store(attributes, readAfter: ticket) }
        }
        return entries
    }

    private static func isDots(_ name: [UInt8]) -> Bool { name == [46] || name == [46, 46] }

    public func readlink(_ ino: UInt64) throws(Errno) -> [UInt8] { try inner.readlink(ino) }
    public func getXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) -> [UInt8] {
        if ino == rootInodeNumber, let answer = try ClusterControl.answer(name, of: self, failureDetection: failureDetection,
                                                                                   locks: client) {
            return answer
        }
        return try inner.getXattr(ino, name: name)
    }
    public func listXattrs(_ ino: UInt64) throws(Errno) -> [[UInt8]] { try inner.listXattrs(ino) }
    public func statistics() throws(Errno) -> VolumeStatistics { try inner.statistics() }
    public func opened(_ ino: UInt64, by node: UInt32?) throws(Errno) -> UInt64 { try inner.opened(ino, by: node) }
    public func openFiles() throws(Errno) -> [OpenFile] { try inner.openFiles() }
    public func reclaimOpenFiles(_ files: [OpenHandle], by node: UInt32?) throws(Errno) { try inner.reclaimOpenFiles(files, by: node) }

    // MARK: file locks

    // They protect no cache. An inode's locks are kept by this node while no other node holds or wants one
    // (`FileLockDelegation`), and the calls on it are answered here; the others go to the coordinator.

    public func lockConflict(_ request: FileLock) throws(Errno) -> FileLock? {
        try fileLockDelegation.serve(request.ino, .lock, local: { table in .some(table.conflict(with: request)) }) {
            () throws(Errno) in try inner.lockConflict(request)
        }
    }

    public func setLock(_ request: FileLock, wait: UInt64?) throws(Errno) -> Bool {
        try fileLockDelegation.serve(request.ino, .lock, local: { (table) throws(Errno) -> Bool? in
            guard case .granted = table.lock(request, wait: nil) else {
                // One that would wait does so at the coordinator, which sees every node's waits.
                if wait == nil { throw .wouldBlock }
                return nil
            }
            return true
        }) { () throws(Errno) in try inner.setLock(request, wait: wait) }
    }

    public func cancelLockWait(_ wait: UInt64) throws(Errno) { try inner.cancelLockWait(wait) }

    public func unlock(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) throws(Errno) {
        try fileLockDelegation.serve(ino, .release, local: { table in
            _ = table.unlock(ino: ino, kind: kind, range: range, owner: owner)
            return ()
        }) { () throws(Errno) in try inner.unlock(ino, kind: kind, range: range, owner: owner) }
    }

    public func releaseRecordLocks(_ ino: UInt64, owner: FileLockOwner) throws(Errno) {
        try fileLockDelegation.serve(ino, .release, local: { table in
            _ = table.releaseRecordLocks(ino: ino, owner: owner)
            return ()
        }) { () throws(Errno) in try inner.releaseRecordLocks(ino, owner: owner) }
    }

    /// Every lock in the cluster: the nodes that keep some give them back first, this node's own are added.
    public func fileLocks() throws(Errno) -> [FileLock] {
        let kept = try inner.lockDelegations().filter { $0.node != fileLockDelegation.node }.map(\.ino)
        let central = try fileLockDelegation.looking(at: kept) { () throws(Errno) in try inner.fileLocks() }
        return central + fileLockDelegation.localLocks
    }

    public func reclaimLocks(_ locks: [FileLock], by node: UInt32?) throws(Errno) { try inner.reclaimLocks(locks, by: node) }
    public func withdrawLocks(_ ino: UInt64, by node: UInt32?) throws(Errno) -> [FileLock] { try inner.withdrawLocks(ino, by: node) }
    public func depositLocks(_ ino: UInt64, _ locks: [FileLock], by node: UInt32?) throws(Errno) {
        try inner.depositLocks(ino, locks, by: node)
    }
    public func lockDelegations() throws(Errno) -> [DelegatedInode] { try inner.lockDelegations() }

    /// The OFD and flock locks of the handle go with it: from this node's table if it keeps the inode's, and
    /// the coordinator's otherwise, which releases the open file itself too.
    public func released(_ ino: UInt64, handle: UInt64, by node: UInt32?) throws(Errno) {
        try licences.tellWrittenInPlace(ino)
        var releasedCentrally = false
        try fileLockDelegation.serve(ino, .release, local: { [fileLockDelegation] table in
            _ = table.release(handle: handle, node: fileLockDelegation.node)
            return ()
        }) { () throws(Errno) in
            try inner.released(ino, handle: handle, by: node)
            releasedCentrally = true
        }
        if !releasedCentrally { try inner.released(ino, handle: handle, by: node) }
    }

    /// The map of a whole window around `range` is asked for, and kept, so the reads and overwrites after it
    /// need no call.
    public func mapping(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> (size: UInt64, segments: [FileSegment]) {
        if let done = try whileAlone({ () throws(Errno) in try inner.mapping(ino, range) }) { return done }
        if let map = licences.cachedMap(ino), let segments = map.segments(in: range) { return (map.size, segments) }
        let window = CachedFileMap.window(around: range)
        let ticket = licences.ticket()
        licences.want(ino)
        let (size, segments) = try inner.mapping(ino, window)
        licences.store(ino, size: size, window: window, segments: segments, readAfter: ticket)
        return (size, CachedFileMap.cut(segments, to: range))
    }

    public func commit() throws(Errno) {
        try licences.tellAllWrittenInPlace()
        try inner.commit()
    }

    public func sync(reportingTo handle: UInt64?) throws(Errno) {
        try licences.tellAllWrittenInPlace()
        try inner.sync(reportingTo: handle)
    }

    // MARK: changes of one inode

    public func setAttributes(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes {
        if let done = try whileAlone({ () throws(Errno) in try inner.setAttributes(ino, changes) }) { return done }
        return try licences.changing([ino]) { () throws(Errno) in try inner.setAttributes(ino, changes) }
    }

    public func setXattr(_ ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool) throws(Errno) {
        if let done = try whileAlone({ () throws(Errno) in try inner.setXattr(ino, name: name, value: value, create: create, replace: replace) }) { return done }
        try licences.changing([ino]) { () throws(Errno) in
            try inner.setXattr(ino, name: name, value: value, create: create, replace: replace)
        }
    }

    public func removeXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) {
        if let done = try whileAlone({ () throws(Errno) in try inner.removeXattr(ino, name: name) }) { return done }
        try licences.changing([ino]) { () throws(Errno) in try inner.removeXattr(ino, name: name) }
    }

    /// Blocks already written need nothing allocated: their segments come from the cached map. A write
    /// inside the file whose window is not cached reads the window first (one call, then none for the
    /// writes after it); an append does not, it allocates anyway.
    public func prepareWrite(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> [FileSegment] {
        if let done = try whileAlone({ () throws(Errno) in try inner.prepareWrite(ino, range) }) { return done }
        if licences.cachedMap(ino)?.segments(in: range) == nil, let size = licences.sizeHint(ino),
           range.upperBound <= Int64(size) {
            _ = try mapping(ino, range)
        }
        return try licences.changing([ino], keepsCache: true) { () throws(Errno) -> [FileSegment] in
            if let segments = licences.cachedMap(ino)?.segments(in: range), segments.allSatisfy(\.isWritten) {
                return segments
            }
            defer { licences.dropChanged(ino) }
            return try inner.prepareWrite(ino, range)
        }
    }

    /// A write that filled no unwritten block and ended inside the file changed only the mtime: that is
    /// told later (`InodeLicences.tellWrittenInPlace`).
    public func completeWrite(_ ino: UInt64, filled: [Range<Int64>], end: Int64) throws(Errno) {
        if let done = try whileAlone({ () throws(Errno) in try inner.completeWrite(ino, filled: filled, end: end) }) { return done }
        try licences.changing([ino], keepsCache: true) { () throws(Errno) in
            if filled.isEmpty, let map = licences.cachedMap(ino), UInt64(max(end, 0)) <= map.size {
                licences.wroteInPlace(ino)
                return
            }
            defer { licences.dropChanged(ino) }
            try inner.completeWrite(ino, filled: filled, end: end)
        }
    }

    public func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno) {
        if let done = try whileAlone({ () throws(Errno) in try inner.fallocate(ino, range, mode: mode) }) { return done }
        try licences.changing([ino]) { () throws(Errno) in try inner.fallocate(ino, range, mode: mode) }
    }

    // MARK: changes of names

    public func createNode(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, symlinkTarget: [UInt8]?,
                           caller: Caller) throws(Errno) -> InodeAttributes {
        if let done = try whileAlone({ () throws(Errno) in
            try inner.createNode(parent: parent, name: name, mode: mode, rdev: rdev, symlinkTarget: symlinkTarget, caller: caller)
        }) { return done }
        let attributes = try licences.changing([parent], names: [(parent, name)]) { () throws(Errno) in
            try inner.createNode(parent: parent, name: name, mode: mode, rdev: rdev, symlinkTarget: symlinkTarget,
                                 caller: caller)
        }
        licences.want(attributes.ino, mode: .ex)
        return attributes
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(Errno) -> InodeAttributes {
        if let done = try whileAlone({ () throws(Errno) in try inner.link(ino, newParent: newParent, newName: newName) }) { return done }
        return try licences.changing([ino, newParent], names: [(newParent, newName)]) { () throws(Errno) in
            try inner.link(ino, newParent: newParent, newName: newName)
        }
    }

    public func unlink(parent: UInt64, name: [UInt8]) throws(Errno) {
        if let done = try whileAlone({ () throws(Errno) in try inner.unlink(parent: parent, name: name) }) { return done }
        try removing([(parent, name)]) { () throws(Errno) in try inner.unlink(parent: parent, name: name) }
    }

    public func rmdir(parent: UInt64, name: [UInt8]) throws(Errno) {
        if let done = try whileAlone({ () throws(Errno) in try inner.rmdir(parent: parent, name: name) }) { return done }
        try removing([(parent, name)]) { () throws(Errno) in try inner.rmdir(parent: parent, name: name) }
    }

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], mode: RenameMode) throws(Errno) {
        if let done = try whileAlone({ () throws(Errno) in try inner.rename(parent: parent, name: name, newParent: newParent, newName: newName, mode: mode) }) { return done }
        try removing([(parent, name), (newParent, newName)]) { () throws(Errno) in
            try inner.rename(parent: parent, name: name, newParent: newParent, newName: newName, mode: mode)
        }
    }

    /// A change that removes or moves the inodes that `names` name: it holds the parents' and those inodes'
    /// locks. Which inodes they are is known only by looking; it is checked again once the parents are held
    /// (nobody else can change the names then), and the change starts over if another node changed them.
    /// A name that does not resolve is left to the coordinator, whose answer (ENOENT, ENOTDIR) is the call's.
    private func removing(_ names: [(parent: UInt64, name: [UInt8])], _ body: () throws(Errno) -> Void) throws(Errno) {
        func resolve() -> [UInt64?] { names.map { try? lookup(parent: $0.parent, name: $0.name).ino } }
        for _ in 0..<16 {
            let children = resolve()
            let inodes = names.map(\.parent) + children.compactMap { $0 }
            let done = try licences.changing(inodes, names: names, emptied: children.compactMap { $0 }) { () throws(Errno) -> Bool in
                guard resolve() == children else { return false }
                try body()
                return true
            }
            if done { return }
        }
        // The names kept changing under us: another node renames them as fast as we look.
        throw .busy
    }
}
