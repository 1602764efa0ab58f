import CSQLite
import Foundation
import Glibc

/// The metadata engine: namespace, inodes, extents, free space and xattrs in SQLite on the LUN.
///
/// Not thread-safe: `LocalMetadataService` owns it behind a mutex. Every mutation is one transaction.
/// Sizes and mtimes of writes that did not allocate are kept in memory (`pendingWrites`) and folded into the
/// next transaction, at flush/fsync/release, or by the periodic commit, so plain overwrites cost no SQL.
final class MetadataStore {
    static let rootInode: UInt64 = 1
    static let nameMax = 255
    /// SQLite's page size, fixed when a volume is formatted.
    static let pageSize: Int64 = 4096

    let db: SQLiteConnection
    let vfs: LUNVirtualFileSystem
    let lun: FileDescriptor
    let superblock: Superblock
    let blockSize: Int64
    /// Opened to be read only (fsck without --repair): nothing is reclaimed, committed or checkpointed.
    let readOnly: Bool
    private(set) var freeBytes: Int64
    /// Space freed since the last sync: not allocatable until that freeing is durable.
    private(set) var freedBytes: Int64 = 0
    private var inodeCount: Int64
    /// The next inode number and directory entry id; they only grow while mounted, so the kernel never sees
    /// one number stand for two files.
    private var nextInode: Int64 = 2
    private var nextEntryID: Int64 = 1
    /// Inode numbers below this may have been handed out, by this mount or an earlier one. It is kept in the
    /// volume table and raised a batch at a time, so a number is never handed out twice over the volume's life:
    /// a node or an NFS client holding the number of a deleted file cannot reach a new one by it.
    private var inodeNumbersReserved: Int64 = 0
    private static let inodeNumberBatch: Int64 = 1024
    private var extentCache: [UInt64: ExtentMap] = [:]
    private var pendingWrites: [UInt64: (size: UInt64, mtime: Int64)] = [:]
    private var openCounts: [UInt64: Int] = [:]
    /// Open files by handle (the `fh` the kernel keeps for each open file), and the failed flushes of the LUN
    /// each has yet to hear of, as Linux's errseq does it: every open file sees a failure once.
    private var openHandles: [UInt64: UInt64] = [:]
    private var nextHandle: UInt64 = 1
    private var unreportedFlushErrors: [UInt64: Errno] = [:]
    /// Files written since the last flush of the LUN began: what a failing flush leaves not durable.
    private var writtenSinceFlush: Set<UInt64> = []
    /// Inodes in the orphans table: unlinked while open.
    private var orphans: Set<UInt64> = []

    // MARK: opening

    private static let vfsCounter = AtomicCounter()

    private init(lun: FileDescriptor, superblock: Superblock, readOnly: Bool = false) throws {
        self.lun = lun
        self.superblock = superblock
        self.readOnly = readOnly
        blockSize = Int64(superblock.blockSize)
        vfs = try LUNVirtualFileSystem(name: "csvfs-\(superblock.uuid.uuidString)-\(Self.vfsCounter.next())",
                                       lun: lun, region: superblock.metadataRegion, readOnly: readOnly)
        db = try SQLiteConnection(path: "metadata.db", vfs: vfs.name,
                                  flags: readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        // Exclusive locking before WAL: the WAL index then lives in heap memory, no shared memory needed.
        try db.execute("""
            PRAGMA locking_mode=EXCLUSIVE; PRAGMA page_size=\(Self.pageSize); PRAGMA journal_mode=WAL;
            PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-65536;
            PRAGMA wal_autocheckpoint=\(max(256, superblock.walCapacity / 4096 / 2));
            """)
        freeBytes = 0
        inodeCount = 0
    }

    /// Writes an empty filesystem: the schema, the root directory, all of the data region free.
    static func format(lun: FileDescriptor, superblock: Superblock, rootOwner: Caller) throws -> MetadataStore {
        try LUNVirtualFileSystem.writeHeader(lun: lun, region: superblock.metadataRegion)
        let store = try MetadataStore(lun: lun, superblock: superblock)
        let now = Time.nowNanoseconds()
        try store.db.transaction {
            try store.db.execute(MetadataSchema.create)
            try store.db.statement("""
                INSERT INTO inodes(ino, mode, nlink, uid, gid, atime, mtime, ctime, parent) VALUES (?, ?, 2, ?, ?, ?, ?, ?, ?)
                """).bind(.int(rootInode), .int(S_IFDIR | 0o755), .int(rootOwner.uid), .int(rootOwner.gid),
                          .integer(now), .integer(now), .integer(now), .int(rootInode)).run()
            try store.db.statement("INSERT INTO free_space(start, length) VALUES (?, ?)")
                .bind(.integer(superblock.dataOffset), .integer(superblock.dataLength)).run()
            try store.db.statement("INSERT INTO volume(key, value) VALUES ('schema_version', ?)")
                .bind(.integer(MetadataSchema.version)).run()
        }
        try store.loadCounters()
        return store
    }

    /// Opens the volume's database; SQLite recovers whatever a crashed mount left half-done (in memory only,
    /// when `readOnly`).
    static func open(lun: FileDescriptor, superblock: Superblock, readOnly: Bool = false) throws -> MetadataStore {
        let store: MetadataStore
        do {
            store = try MetadataStore(lun: lun, superblock: superblock, readOnly: readOnly)
            let check = try store.db.statement("SELECT value FROM volume WHERE key = 'schema_version'")
            guard try check.step(), check.int64(0) == MetadataSchema.version else {
                throw VolumeError.corruptMetadata("unknown schema version")
            }
            try store.loadCounters()
            if !readOnly {
                try store.reclaimFreedSpace()
                try store.commit()
            }
        } catch let error as SQLiteError {
            throw VolumeError.corruptMetadata(error.message)
        } catch let error as Errno {
            throw VolumeError.corruptMetadata("metadata region header unreadable (\(error))")
        }
        return store
    }

    private func loadCounters() throws {
        let free = try db.statement("SELECT COALESCE(SUM(length), 0) FROM free_space")
        _ = try free.step()
        freeBytes = free.int64(0)
        let freed = try db.statement("SELECT COALESCE(SUM(length), 0) FROM freed_space")
        _ = try freed.step()
        freedBytes = freed.int64(0)
        let inodes = try db.statement("SELECT COUNT(*), COALESCE(MAX(ino), 1) FROM inodes")
        _ = try inodes.step()
        inodeCount = inodes.int64(0)
        let reserved = try db.statement("SELECT COALESCE(MAX(value), 0) FROM volume WHERE key = 'inode_numbers_reserved'")
        _ = try reserved.step()
        inodeNumbersReserved = reserved.int64(0)
        nextInode = max(nextInode, inodes.int64(1) + 1, inodeNumbersReserved)
        let entries = try db.statement("SELECT COALESCE(MAX(id), 0) FROM dirents")
        _ = try entries.step()
        nextEntryID = max(nextEntryID, entries.int64(0) + 1)
    }

    /// Frees inodes left without a name by a mount that died while they were open.
    func reclaimOrphans() throws(Errno) {
        try mutate {
            let statement = try db.statement("SELECT ino FROM orphans")
            var orphans: [UInt64] = []
            while try statement.step() { orphans.append(UInt64(statement.int64(0))) }
            for ino in orphans { try deleteInode(ino) }
        }
    }

    /// Space freed before a crash or unmount is durable now.
    func reclaimFreedSpace() throws(Errno) {
        try endSync(SyncTicket(generation: syncedGeneration, needsFlush: false, freed: try freedRuns()))
    }

    /// Checkpoints the WAL into the database so the next open has nothing to replay.
    func close() {
        if readOnly {
            db.close()
            return
        }
        try? commit()
        try? db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    }

    // MARK: transactions

    /// Counts commits; `syncedGeneration` is the count the last completed flush of the LUN covered.
    private var commitGeneration = 0
    private var syncedGeneration = 0

    /// One operation, one transaction, committed before the operation answers: whatever a caller was told
    /// happened survives a crash of this process (the kernel never tells a FUSE server about syncfs, so this
    /// is what makes syncfs keep its word). An operation that finds no space while freed space waits for a
    /// sync gets one more try after that sync.
    private func mutate<R>(_ body: () throws -> R) throws(Errno) -> R {
        do {
            return try transaction(body)
        } catch let error where error == .noSpace && freedBytes > 0 {
            try sync()
            return try transaction(body)
        }
    }

    private func transaction<R>(_ body: () throws -> R) throws(Errno) -> R {
        do {
            let result = try db.transaction {
                try applyPendingWrites()
                return try body()
            }
            // The VFS writes the log when it sees the commit frame; this covers any commit it did not see.
            try vfs.flushLog()
            pendingWrites.removeAll()
            commitGeneration += 1
            return result
        } catch {
            dropCachesAfterRollback()
            throw Self.errno(error)
        }
    }

    private static func errno(_ error: any Error) -> Errno {
        switch error {
        case let error as Errno: return error
        case let error as SQLiteError: return error.errno
        default: return .io
        }
    }

    /// A rolled-back transaction leaves memory ahead of the database: reload what is cached.
    private func dropCachesAfterRollback() {
        extentCache.removeAll()
        try? loadCounters()
        orphans = (try? loadOrphans()) ?? orphans
    }

    private func loadOrphans() throws -> Set<UInt64> {
        defer { db.finishStatements() }
        let statement = try db.statement("SELECT ino FROM orphans")
        var result: Set<UInt64> = []
        while try statement.step() { result.insert(UInt64(statement.int64(0))) }
        return result
    }

    private func read<R>(_ body: () throws -> R) throws(Errno) -> R {
        defer { db.finishStatements() }
        do {
            return try body()
        } catch {
            throw Self.errno(error)
        }
    }

    private func applyPendingWrites() throws {
        guard !pendingWrites.isEmpty else { return }
        let update = "UPDATE inodes SET size = MAX(size, ?), mtime = ?, ctime = ? WHERE ino = ?"
        for (ino, pending) in pendingWrites {
            try db.statement(update).bind(.int(pending.size), .integer(pending.mtime), .integer(pending.mtime), .int(ino)).run()
        }
    }

    /// Commits the sizes and times that plain overwrites left in memory.
    func commit() throws(Errno) {
        guard !pendingWrites.isEmpty else { return }
        try mutate {}
    }

    /// Makes everything so far durable, then lets space freed before now be allocated again: only a durable
    /// free may be reused, or a crash could bring back a deleted file whose blocks hold another's data.
    func sync() throws(Errno) {
        let ticket = try beginSync()
        if ticket.needsFlush { try lun.dataSync() }
        try endSync(ticket)
    }

    /// What one sync covers, noted before the LUN is flushed: the caller may flush without holding the store,
    /// so operations go on meanwhile; what they commit is left for the next sync.
    struct SyncTicket {
        let generation: Int
        let needsFlush: Bool
        let freed: [(start: Int64, length: Int64)]
        /// The files written since the previous flush began.
        var written: Set<UInt64> = []
    }

    func beginSync() throws(Errno) -> SyncTicket {
        try commit()
        let freed = freedBytes > 0 ? try freedRuns() : []
        let written = writtenSinceFlush
        writtenSinceFlush = []
        return SyncTicket(generation: commitGeneration,
                          needsFlush: commitGeneration > syncedGeneration || !freed.isEmpty || !written.isEmpty,
                          freed: freed, written: written)
    }

    /// The flush after `beginSync` failed: what it covered is still not durable, and each file open on what it
    /// covered hears of it at its next fsync.
    func flushFailed(_ ticket: SyncTicket, _ error: Errno) {
        writtenSinceFlush.formUnion(ticket.written)
        for (handle, ino) in openHandles where ticket.written.contains(ino) {
            unreportedFlushErrors[handle] = error
        }
    }

    /// The failed flush the open file `handle` has not heard of yet, if any; it hears of it once.
    func takeFlushError(handle: UInt64) -> Errno? {
        unreportedFlushErrors.removeValue(forKey: handle)
    }

    /// After the flush that followed `beginSync`: the frees it covered become allocatable.
    func endSync(_ ticket: SyncTicket) throws(Errno) {
        syncedGeneration = max(syncedGeneration, ticket.generation)
        guard !ticket.freed.isEmpty else { return }
        try mutate {
            for run in ticket.freed {
                // A sync inside the store (an operation short of space) may have reclaimed the run already.
                try db.statement("DELETE FROM freed_space WHERE start = ?").bind(.integer(run.start)).run()
                guard db.changes == 1 else { continue }
                try addFreeSpace(run.start, run.length)
                freedBytes -= run.length
            }
        }
    }

    private func freedRuns() throws(Errno) -> [(start: Int64, length: Int64)] {
        try read {
            let statement = try db.statement("SELECT start, length FROM freed_space")
            var runs: [(start: Int64, length: Int64)] = []
            while try statement.step() { runs.append((statement.int64(0), statement.int64(1))) }
            return runs
        }
    }

    /// Runs repair statements (fsck) as one operation.
    func repair(_ statements: [String]) throws(Errno) {
        try mutate { for sql in statements { try db.execute(sql) } }
    }

    // MARK: metadata space

    /// Operations that grow the metadata stop (ENOSPC) while the database and the log together come near the
    /// database's capacity. SQLite meeting a full region mid-commit may roll back more than the
    /// failing statement, so it must never get there; deletions, which free space, still go through.
    ///
    /// Measuring costs two statements, so while plenty is left it is measured every `spaceCheckInterval`
    /// operations only: that many operations cannot grow the database by `plentyOfSpace`.
    private func requireMetadataSpace() throws(Errno) {
        if lastSpaceLeft > Self.plentyOfSpace && operationsSinceSpaceCheck < Self.spaceCheckInterval {
            operationsSinceSpaceCheck += 1
            return
        }
        lastSpaceLeft = try metadataBytesLeft()
        operationsSinceSpaceCheck = 0
        if lastSpaceLeft <= 0 { throw Errno.noSpace }
    }

    private var lastSpaceLeft: Int64 = 0
    private var operationsSinceSpaceCheck = 0
    private static let spaceCheckInterval = 32
    private static let plentyOfSpace: Int64 = 16 << 20

    /// What the database may still grow by before growth stops.
    private func metadataBytesLeft() throws(Errno) -> Int64 {
        let capacity = superblock.metadataRegion.databaseCapacity
        let reserve = max(1 << 20, capacity / 8)
        let livePages = try read { () throws -> Int64 in
            let pages = try db.statement("PRAGMA page_count"), free = try db.statement("PRAGMA freelist_count")
            _ = try pages.step()
            _ = try free.step()
            return pages.int64(0) - free.int64(0)
        }
        return capacity - reserve - livePages * Self.pageSize
    }

    // MARK: inodes

    func attributes(_ ino: UInt64) throws(Errno) -> InodeAttributes {
        try read { () throws -> InodeAttributes in
            let statement = try db.statement("SELECT \(Self.attributeColumns) FROM inodes WHERE ino = ?")
            statement.bind(.int(ino))
            guard try statement.step() else { throw Errno.noEntry }
            return attributes(ino, from: statement, at: 0)
        }
    }

    /// The inode columns `attributes(_:from:at:)` decodes, in its order.
    private static let attributeColumns = "mode, nlink, uid, gid, size, allocated, rdev, atime, mtime, ctime"
    private static let joinedAttributeColumns = "i.mode, i.nlink, i.uid, i.gid, i.size, i.allocated, i.rdev, i.atime, i.mtime, i.ctime"

    /// Decodes `attributeColumns` starting at column `first`, with what a pending write changed on top.
    private func attributes(_ ino: UInt64, from statement: SQLiteStatement, at first: Int32) -> InodeAttributes {
        func column(_ index: Int32) -> Int64 { statement.int64(first + index) }
        var attributes = InodeAttributes(
            ino: ino, mode: UInt32(column(0)), nlink: UInt32(column(1)), uid: UInt32(column(2)), gid: UInt32(column(3)),
            size: UInt64(column(4)), allocated: UInt64(column(5)), rdev: UInt64(column(6)), atime: column(7),
            mtime: column(8), ctime: column(9))
        if let pending = pendingWrites[ino] {
            attributes.size = max(attributes.size, pending.size)
            attributes.mtime = pending.mtime
            attributes.ctime = pending.mtime
        }
        return attributes
    }

    private func directory(_ ino: UInt64) throws -> InodeAttributes {
        let attributes = try attributes(ino)
        guard attributes.isDirectory else { throw Errno.notDirectory }
        guard attributes.nlink > 0 else { throw Errno.noEntry }
        return attributes
    }

    private func entry(parent: UInt64, name: [UInt8]) throws -> (ino: UInt64, mode: UInt32)? {
        let statement = try db.statement("SELECT ino, mode FROM dirents WHERE parent = ? AND name = ?")
        statement.bind(.int(parent), .blob(name))
        guard try statement.step() else { return nil }
        return (UInt64(statement.int64(0)), UInt32(statement.int64(1)))
    }

    static func validate(name: [UInt8]) throws(Errno) {
        if name.count > nameMax { throw Errno.nameTooLong }
        if name.isEmpty || name.contains(UInt8(ascii: "/")) || name == [46] || name == [46, 46] { throw Errno.invalid }
    }

    func lookup(parent: UInt64, name: [UInt8]) throws(Errno) -> InodeAttributes {
        if name.count > Self.nameMax { throw Errno.nameTooLong }
        let found = try read { try entry(parent: parent, name: name) }
        guard let found else { throw Errno.noEntry }
        return try attributes(found.ino)
    }

    private func touchDirectory(_ ino: UInt64, nlinkDelta: Int64 = 0, now: Int64) throws {
        try db.statement("UPDATE inodes SET mtime = ?, ctime = ?, nlink = nlink + ? WHERE ino = ?")
            .bind(.integer(now), .integer(now), .integer(nlinkDelta), .int(ino)).run()
    }

    /// Creates a regular file, FIFO, device node, directory or symlink under `parent`.
    func createNode(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, symlinkTarget: [UInt8]?,
                    caller: Caller) throws(Errno) -> InodeAttributes {
        try Self.validate(name: name)
        try requireMetadataSpace()
        return try mutate { () throws -> InodeAttributes in
            let parentAttributes = try directory(parent)
            if try entry(parent: parent, name: name) != nil { throw Errno.exists }
            let isDirectory = (mode & UInt32(S_IFMT)) == UInt32(S_IFDIR)
            var mode = mode
            var gid = caller.gid
            // BSD group semantics of a setgid directory, as ext4 and XFS do them.
            if parentAttributes.mode & UInt32(S_ISGID) != 0 {
                gid = parentAttributes.gid
                if isDirectory { mode |= UInt32(S_ISGID) }
            }
            let now = Time.nowNanoseconds()
            let size = UInt64(symlinkTarget?.count ?? 0)
            let ino = try takeInodeNumber()
            try db.statement("""
                INSERT INTO inodes(ino, mode, nlink, uid, gid, size, rdev, atime, mtime, ctime, parent, target)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """).bind(.integer(ino), .int(mode), .int(isDirectory ? 2 : 1), .int(caller.uid), .int(gid), .int(size), .int(rdev),
                          .integer(now), .integer(now), .integer(now), .int(isDirectory ? parent : 0),
                          symlinkTarget.map { .blob($0) } ?? .null).run()
            try insertEntry(parent: parent, name: name, ino: UInt64(ino), mode: mode)
            try touchDirectory(parent, nlinkDelta: isDirectory ? 1 : 0, now: now)
            inodeCount += 1
            return InodeAttributes(ino: UInt64(ino), mode: mode, nlink: isDirectory ? 2 : 1, uid: caller.uid, gid: gid,
                                   size: size, allocated: 0, rdev: rdev, atime: now, mtime: now, ctime: now)
        }
    }

    /// A number no inode of this volume has had; inside the transaction that creates the inode.
    private func takeInodeNumber() throws -> Int64 {
        if nextInode >= inodeNumbersReserved {
            try db.statement("INSERT OR REPLACE INTO volume(key, value) VALUES ('inode_numbers_reserved', ?)")
                .bind(.integer(nextInode + Self.inodeNumberBatch)).run()
            inodeNumbersReserved = nextInode + Self.inodeNumberBatch
        }
        defer { nextInode += 1 }
        return nextInode
    }

    private func insertEntry(parent: UInt64, name: [UInt8], ino: UInt64, mode: UInt32) throws {
        try db.statement("INSERT INTO dirents(parent, id, name, ino, mode) VALUES (?, ?, ?, ?, ?)")
            .bind(.int(parent), .integer(nextEntryID), .blob(name), .int(ino), .int(mode & UInt32(S_IFMT))).run()
        nextEntryID += 1
    }

    func readlink(_ ino: UInt64) throws(Errno) -> [UInt8] {
        try read {
            let statement = try db.statement("SELECT mode, target FROM inodes WHERE ino = ?")
            statement.bind(.int(ino))
            guard try statement.step() else { throw Errno.noEntry }
            guard UInt32(statement.int64(0)) & UInt32(S_IFMT) == UInt32(S_IFLNK) else { throw Errno.invalid }
            return statement.blob(1)
        }
    }

    func link(ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(Errno) -> InodeAttributes {
        try Self.validate(name: newName)
        try requireMetadataSpace()
        try mutate {
            let target = try attributes(ino)
            if target.isDirectory { throw Errno.notPermitted }
            if target.nlink == 0 { throw Errno.noEntry }
            if target.nlink >= UInt32(Int32.max) { throw Errno.tooManyLinks }
            _ = try directory(newParent)
            if try entry(parent: newParent, name: newName) != nil { throw Errno.exists }
            let now = Time.nowNanoseconds()
            try insertEntry(parent: newParent, name: newName, ino: ino, mode: target.fileType)
            try db.statement("UPDATE inodes SET nlink = nlink + 1, ctime = ? WHERE ino = ?").bind(.integer(now), .int(ino)).run()
            try touchDirectory(newParent, now: now)
        }
        return try attributes(ino)
    }

    func unlink(parent: UInt64, name: [UInt8]) throws(Errno) {
        if name.count > Self.nameMax { throw Errno.nameTooLong }
        try mutate {
            guard let found = try entry(parent: parent, name: name) else { throw Errno.noEntry }
            if found.mode == UInt32(S_IFDIR) { throw Errno.isDirectory }
            let now = Time.nowNanoseconds()
            try removeEntry(parent: parent, name: name, ino: found.ino, now: now)
            try touchDirectory(parent, now: now)
        }
    }

    func rmdir(parent: UInt64, name: [UInt8]) throws(Errno) {
        if name.count > Self.nameMax { throw Errno.nameTooLong }
        try mutate {
            guard let found = try entry(parent: parent, name: name) else { throw Errno.noEntry }
            if found.mode != UInt32(S_IFDIR) { throw Errno.notDirectory }
            try requireEmpty(found.ino)
            let now = Time.nowNanoseconds()
            try removeEntry(parent: parent, name: name, ino: found.ino, now: now)
            try touchDirectory(parent, nlinkDelta: -1, now: now)
        }
    }

    private func requireEmpty(_ directory: UInt64) throws {
        let statement = try db.statement("SELECT 1 FROM dirents WHERE parent = ? LIMIT 1")
        statement.bind(.int(directory))
        if try statement.step() { throw Errno.notEmpty }
    }

    /// Drops one name of an inode; the inode goes when its last name goes, unless it is still open.
    private func removeEntry(parent: UInt64, name: [UInt8], ino: UInt64, now: Int64) throws {
        try db.statement("DELETE FROM dirents WHERE parent = ? AND name = ?").bind(.int(parent), .blob(name)).run()
        let attributes = try attributes(ino)
        let remaining: UInt32 = attributes.isDirectory ? 0 : attributes.nlink - 1
        try db.statement("UPDATE inodes SET nlink = ?, ctime = ? WHERE ino = ?").bind(.int(remaining), .integer(now), .int(ino)).run()
        guard remaining == 0 else { return }
        if openCounts[ino, default: 0] > 0 {
            try db.statement("INSERT OR IGNORE INTO orphans(ino) VALUES (?)").bind(.int(ino)).run()
            orphans.insert(ino)
        } else {
            try deleteInode(ino)
        }
    }

    private func deleteInode(_ ino: UInt64) throws {
        var map = try extentMap(ino)
        let (_, freed) = map.remove(0..<Int64.max)
        for piece in freed { try releaseSpace(piece.physical, piece.length) }
        try db.statement("DELETE FROM extents WHERE ino = ?").bind(.int(ino)).run()
        try db.statement("DELETE FROM xattrs WHERE ino = ?").bind(.int(ino)).run()
        try db.statement("DELETE FROM orphans WHERE ino = ?").bind(.int(ino)).run()
        try db.statement("DELETE FROM inodes WHERE ino = ?").bind(.int(ino)).run()
        extentCache[ino] = nil
        pendingWrites[ino] = nil
        orphans.remove(ino)
        inodeCount -= 1
    }

    func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], mode: RenameMode) throws(Errno) {
        if name.count > Self.nameMax { throw Errno.nameTooLong }
        try Self.validate(name: newName)
        try mutate {
            guard let source = try entry(parent: parent, name: name) else { throw Errno.noEntry }
            _ = try directory(newParent)
            let target = try entry(parent: newParent, name: newName)
            let sourceIsDirectory = source.mode == UInt32(S_IFDIR)
            if sourceIsDirectory, parent != newParent, try isAncestor(source.ino, of: newParent) { throw Errno.invalid }
            let now = Time.nowNanoseconds()
            switch mode {
            case .exchange:
                guard let target else { throw Errno.noEntry }
                let targetIsDirectory = target.mode == UInt32(S_IFDIR)
                if targetIsDirectory, parent != newParent, try isAncestor(target.ino, of: parent) { throw Errno.invalid }
                try setEntry(parent: parent, name: name, to: target)
                try setEntry(parent: newParent, name: newName, to: source)
                if parent != newParent, sourceIsDirectory != targetIsDirectory {
                    let delta: Int64 = sourceIsDirectory ? 1 : -1
                    try touchDirectory(newParent, nlinkDelta: delta, now: now)
                    try touchDirectory(parent, nlinkDelta: -delta, now: now)
                } else {
                    try touchDirectory(parent, now: now)
                    try touchDirectory(newParent, now: now)
                }
                if sourceIsDirectory { try setParent(source.ino, newParent) }
                if targetIsDirectory { try setParent(target.ino, parent) }
                try touchInode(source.ino, now: now)
                try touchInode(target.ino, now: now)
                return
            case .noReplace:
                if target != nil { throw Errno.exists }
            case .replace:
                break
            }
            if let target {
                if target.ino == source.ino { return }  // two names of one file: POSIX says do nothing
                let targetIsDirectory = target.mode == UInt32(S_IFDIR)
                if sourceIsDirectory && !targetIsDirectory { throw Errno.notDirectory }
                if !sourceIsDirectory && targetIsDirectory { throw Errno.isDirectory }
                if targetIsDirectory {
                    try requireEmpty(target.ino)
                    try touchDirectory(newParent, nlinkDelta: -1, now: now)
                }
                try removeEntry(parent: newParent, name: newName, ino: target.ino, now: now)
            }
            try db.statement("UPDATE dirents SET parent = ?, name = ? WHERE parent = ? AND name = ?")
                .bind(.int(newParent), .blob(newName), .int(parent), .blob(name)).run()
            if sourceIsDirectory && parent != newParent {
                try touchDirectory(parent, nlinkDelta: -1, now: now)
                try touchDirectory(newParent, nlinkDelta: 1, now: now)
                try setParent(source.ino, newParent)
            } else {
                try touchDirectory(parent, now: now)
                if parent != newParent { try touchDirectory(newParent, now: now) }
            }
            try touchInode(source.ino, now: now)
        }
    }

    private func setEntry(parent: UInt64, name: [UInt8], to entry: (ino: UInt64, mode: UInt32)) throws {
        try db.statement("UPDATE dirents SET ino = ?, mode = ? WHERE parent = ? AND name = ?")
            .bind(.int(entry.ino), .int(entry.mode), .int(parent), .blob(name)).run()
    }

    private func setParent(_ directory: UInt64, _ parent: UInt64) throws {
        try db.statement("UPDATE inodes SET parent = ? WHERE ino = ?").bind(.int(parent), .int(directory)).run()
    }

    private func touchInode(_ ino: UInt64, now: Int64) throws {
        try db.statement("UPDATE inodes SET ctime = ? WHERE ino = ?").bind(.integer(now), .int(ino)).run()
    }

    /// Whether `ancestor` is `directory` or one of the directories above it.
    private func isAncestor(_ ancestor: UInt64, of directory: UInt64) throws -> Bool {
        var current = directory
        var steps = 0
        while true {
            if current == ancestor { return true }
            if current == Self.rootInode { return false }
            let statement = try db.statement("SELECT parent FROM inodes WHERE ino = ?")
            statement.bind(.int(current))
            guard try statement.step() else { return false }
            current = UInt64(statement.int64(0))
            steps += 1
            if steps > 1_000_000 { throw Errno.io }  // a cycle would be corruption; never loop forever
        }
    }

    func parentOf(directory ino: UInt64) throws(Errno) -> UInt64 {
        try read {
            let statement = try db.statement("SELECT parent FROM inodes WHERE ino = ?")
            statement.bind(.int(ino))
            guard try statement.step() else { throw Errno.noEntry }
            return UInt64(statement.int64(0))
        }
    }

    // MARK: attributes

    func setAttributes(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes {
        try mutate {
            var current = try attributes(ino)
            let now = Time.nowNanoseconds()
            if let mode = changes.mode { current.mode = current.fileType | (mode & 0o7777) }
            if let uid = changes.uid { current.uid = uid }
            if let gid = changes.gid { current.gid = gid }
            if let atime = changes.atime { current.atime = Self.resolve(atime, now: now) }
            if let mtime = changes.mtime { current.mtime = Self.resolve(mtime, now: now) }
            if let size = changes.size, size != current.size || current.isRegular {
                guard current.isRegular else { throw current.isDirectory ? Errno.isDirectory : Errno.invalid }
                try truncate(ino, from: current.size, to: size)
                current.size = size
                if changes.mtime == nil { current.mtime = now }
            }
            current.ctime = now
            try db.statement("UPDATE inodes SET mode = ?, uid = ?, gid = ?, size = ?, atime = ?, mtime = ?, ctime = ? WHERE ino = ?")
                .bind(.int(current.mode), .int(current.uid), .int(current.gid), .int(current.size),
                      .integer(current.atime), .integer(current.mtime), .integer(current.ctime), .int(ino)).run()
        }
        return try attributes(ino)
    }

    private static func resolve(_ time: AttributeChanges.Time, now: Int64) -> Int64 {
        switch time {
        case .now: return now
        case .at(let value): return value
        }
    }

    /// Frees the blocks past the new end, and zeroes the rest of the last block on the LUN so a later
    /// extension reads zeros there, as POSIX wants.
    private func truncate(_ ino: UInt64, from oldSize: UInt64, to newSize: UInt64) throws {
        let newEnd = Int64(newSize)
        let blockEnd = (newEnd + blockSize - 1) / blockSize * blockSize
        try removeRange(ino, blockEnd..<Int64.max)
        if newEnd < blockEnd && newSize < oldSize {
            try zeroOnLUN(ino, newEnd..<blockEnd)
        }
    }

    /// Writes zeros over the written parts of a sub-block range (unwritten and holes already read as zeros).
    private func zeroOnLUN(_ ino: UInt64, _ range: Range<Int64>) throws {
        for segment in try extentMap(ino).segments(in: range) where segment.physical != nil && !segment.unwritten {
            let zeros = [UInt8](repeating: 0, count: Int(segment.length))
            try lun.write(zeros, at: segment.physical!)
        }
    }

    // MARK: extents and space

    func extentMap(_ ino: UInt64) throws -> ExtentMap {
        if let cached = extentCache[ino] { return cached }
        let statement = try db.statement("SELECT logical, physical, length, unwritten FROM extents WHERE ino = ? ORDER BY logical")
        statement.bind(.int(ino))
        var extents: [Extent] = []
        while try statement.step() {
            extents.append(Extent(logical: statement.int64(0), physical: statement.int64(1), length: statement.int64(2),
                                  unwritten: statement.int64(3) != 0))
        }
        let map = ExtentMap(extents)
        extentCache[ino] = map
        return map
    }

    /// The segments of `range` and the file's size, for a read or an overwrite; allocates nothing.
    func mapping(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> (size: UInt64, segments: [FileSegment]) {
        try read {
            let statement = try db.statement("SELECT size FROM inodes WHERE ino = ?")
            statement.bind(.int(ino))
            guard try statement.step() else { throw Errno.noEntry }
            let size = max(UInt64(statement.int64(0)), pendingWrites[ino]?.size ?? 0)
            return (size, try extentMap(ino).segments(in: range))
        }
    }

    private func save(_ ino: UInt64, _ map: ExtentMap, _ change: ExtentMap.Change) throws {
        for extent in change.removed {
            try db.statement("DELETE FROM extents WHERE ino = ? AND logical = ?").bind(.int(ino), .integer(extent.logical)).run()
        }
        for extent in change.added {
            try db.statement("INSERT INTO extents(ino, logical, physical, length, unwritten) VALUES (?, ?, ?, ?, ?)")
                .bind(.int(ino), .integer(extent.logical), .integer(extent.physical), .integer(extent.length),
                      .integer(extent.unwritten ? 1 : 0)).run()
        }
        let delta = change.added.reduce(0) { $0 + $1.length } - change.removed.reduce(0) { $0 + $1.length }
        if delta != 0 {
            try db.statement("UPDATE inodes SET allocated = allocated + ? WHERE ino = ?").bind(.integer(delta), .int(ino)).run()
        }
        extentCache[ino] = map
    }

    private func removeRange(_ ino: UInt64, _ range: Range<Int64>) throws {
        var map = try extentMap(ino)
        let (change, freed) = map.remove(range)
        guard !change.removed.isEmpty else { return }
        try save(ino, map, change)
        for piece in freed { try releaseSpace(piece.physical, piece.length) }
    }

    /// Allocates the holes of `range` (block-aligned) as unwritten extents, near the file's neighbouring data.
    private func allocateHoles(_ ino: UInt64, _ range: Range<Int64>) throws {
        try requireMetadataSpace()
        var map = try extentMap(ino)
        let holes = map.segments(in: range).filter { $0.physical == nil }
        let needed = holes.reduce(0) { $0 + $1.length }
        guard needed > 0 else { return }
        guard needed <= freeBytes else { throw Errno.noSpace }
        var new: [Extent] = []
        for hole in holes {
            var logical = hole.logical
            var remaining = hole.length
            var goal = Self.goal(map, before: hole.logical)
            while remaining > 0 {
                let piece = try allocateSpace(remaining, goal: goal)
                new.append(Extent(logical: logical, physical: piece.start, length: piece.length, unwritten: true))
                logical += piece.length
                remaining -= piece.length
                goal = piece.start + piece.length
            }
        }
        let change = map.insert(new)
        try save(ino, map, change)
    }

    /// Where the data before `logical` ends on the LUN, so appending stays contiguous.
    private static func goal(_ map: ExtentMap, before logical: Int64) -> Int64? {
        let index = map.firstIndex(endingAfter: logical)
        guard index > 0 else { return nil }
        let previous = map.extents[index - 1]
        return previous.physicalEnd + (logical - previous.logicalEnd)
    }

    /// Takes free space: from the goal if it is free, else the smallest free run that fits, else the largest.
    private func allocateSpace(_ wanted: Int64, goal: Int64?) throws -> (start: Int64, length: Int64) {
        if let goal {
            let statement = try db.statement("SELECT start, length FROM free_space WHERE start <= ? ORDER BY start DESC LIMIT 1")
            statement.bind(.integer(goal))
            if try statement.step() {
                let start = statement.int64(0), length = statement.int64(1)
                if start + length > goal {
                    let taken = min(wanted, start + length - goal)
                    try takeSpace(run: (start, length), from: goal, length: taken)
                    return (goal, taken)
                }
            }
        }
        let fit = try db.statement("SELECT start, length FROM free_space WHERE length >= ? ORDER BY length, start LIMIT 1")
        fit.bind(.integer(wanted))
        if try fit.step() {
            let start = fit.int64(0), length = fit.int64(1)
            try takeSpace(run: (start, length), from: start, length: wanted)
            return (start, wanted)
        }
        let largest = try db.statement("SELECT start, length FROM free_space ORDER BY length DESC LIMIT 1")
        guard try largest.step() else { throw Errno.noSpace }
        let start = largest.int64(0), length = largest.int64(1)
        try takeSpace(run: (start, length), from: start, length: length)
        return (start, length)
    }

    private func takeSpace(run: (start: Int64, length: Int64), from start: Int64, length: Int64) throws {
        try db.statement("DELETE FROM free_space WHERE start = ?").bind(.integer(run.start)).run()
        if start > run.start {
            try db.statement("INSERT INTO free_space(start, length) VALUES (?, ?)").bind(.integer(run.start), .integer(start - run.start)).run()
        }
        let end = start + length, runEnd = run.start + run.length
        if end < runEnd {
            try db.statement("INSERT INTO free_space(start, length) VALUES (?, ?)").bind(.integer(end), .integer(runEnd - end)).run()
        }
        freeBytes -= length
    }

    /// Gives up a run of a file's blocks; it becomes allocatable at the next sync.
    private func releaseSpace(_ start: Int64, _ length: Int64) throws {
        try db.statement("INSERT INTO freed_space(start, length) VALUES (?, ?)").bind(.integer(start), .integer(length)).run()
        freedBytes += length
    }

    /// Returns a run to free space, merged with free neighbours.
    private func addFreeSpace(_ start: Int64, _ length: Int64) throws {
        freeBytes += length
        var start = start, length = length
        let before = try db.statement("SELECT start, length FROM free_space WHERE start < ? ORDER BY start DESC LIMIT 1")
        before.bind(.integer(start))
        if try before.step(), before.int64(0) + before.int64(1) == start {
            let previousStart = before.int64(0)
            length += before.int64(1)
            try db.statement("DELETE FROM free_space WHERE start = ?").bind(.integer(previousStart)).run()
            start = previousStart
        }
        let after = try db.statement("SELECT length FROM free_space WHERE start = ?")
        after.bind(.integer(start + length))
        if try after.step() {
            let nextLength = after.int64(0)
            try db.statement("DELETE FROM free_space WHERE start = ?").bind(.integer(start + length)).run()
            length += nextLength
        }
        try db.statement("INSERT INTO free_space(start, length) VALUES (?, ?)").bind(.integer(start), .integer(length)).run()
    }

    // MARK: writes

    /// Allocates what `range` lacks and returns its segments; the caller then writes and calls `completeWrite`.
    func prepareWrite(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> [FileSegment] {
        let segments = try read { try extentMap(ino).segments(in: alignedOut(range)) }
        if segments.contains(where: { $0.physical == nil }) {
            try mutate { try allocateHoles(ino, alignedOut(range)) }
        }
        return try read { try extentMap(ino).segments(in: range) }
    }

    /// Records a finished write: unwritten blocks it filled become written, the size grows to `end`.
    func completeWrite(_ ino: UInt64, filled: [Range<Int64>], end: Int64) throws(Errno) {
        let now = Time.nowNanoseconds()
        // An overwrite inside the file leaves only its mtime in memory; one that grows the file, or fills
        // unwritten blocks, is committed before it answers, and leaves nothing behind when that commit fails.
        if filled.isEmpty, try sizeOnDisk(ino) >= UInt64(end) {
            pendingWrites[ino] = (max(pendingWrites[ino]?.size ?? 0, UInt64(end)), now)
            writtenSinceFlush.insert(ino)
            return
        }
        defer { writtenSinceFlush.insert(ino) }
        try mutate {
            var map = try extentMap(ino)
            var change = ExtentMap.Change()
            for range in filled {
                let step = map.setState(range, unwritten: false)
                change.removed += step.removed
                change.added += step.added
            }
            // Rows both added and removed along the way cancel out.
            let added = Set(change.added), removed = Set(change.removed)
            change = ExtentMap.Change(removed: change.removed.filter { !added.contains($0) },
                                      added: change.added.filter { !removed.contains($0) })
            try save(ino, map, change)
            try db.statement("UPDATE inodes SET size = MAX(size, ?), mtime = ?, ctime = ? WHERE ino = ?")
                .bind(.integer(end), .integer(now), .integer(now), .int(ino)).run()
        }
    }

    private func sizeOnDisk(_ ino: UInt64) throws(Errno) -> UInt64 {
        try read {
            let statement = try db.statement("SELECT size FROM inodes WHERE ino = ?")
            statement.bind(.int(ino))
            guard try statement.step() else { throw Errno.noEntry }
            return UInt64(statement.int64(0))
        }
    }

    func alignedOut(_ range: Range<Int64>) -> Range<Int64> {
        (range.lowerBound / blockSize * blockSize)..<((range.upperBound + blockSize - 1) / blockSize * blockSize)
    }

    func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno) {
        try mutate {
            let current = try attributes(ino)
            guard current.isRegular else { throw current.isDirectory ? Errno.isDirectory : Errno.noSys }
            let now = Time.nowNanoseconds()
            var newSize = current.size
            switch mode {
            case .allocate(let keepSize):
                try allocateHoles(ino, alignedOut(range))
                if !keepSize { newSize = max(newSize, UInt64(range.upperBound)) }
            case .punchHole:
                try clear(ino, range, keepAllocated: false)
            case .zeroRange(let keepSize):
                try clear(ino, range, keepAllocated: true)
                try allocateHoles(ino, alignedOut(range))
                if !keepSize { newSize = max(newSize, UInt64(range.upperBound)) }
            }
            try db.statement("UPDATE inodes SET size = ?, mtime = ?, ctime = ? WHERE ino = ?")
                .bind(.int(newSize), .integer(now), .integer(now), .int(ino)).run()
        }
    }

    /// Makes `range` read as zeros: whole blocks are freed (or marked unwritten), partial blocks zeroed on the LUN.
    private func clear(_ ino: UInt64, _ range: Range<Int64>, keepAllocated: Bool) throws {
        let innerStart = (range.lowerBound + blockSize - 1) / blockSize * blockSize
        let innerEnd = range.upperBound / blockSize * blockSize
        if innerStart < innerEnd {
            if keepAllocated {
                var map = try extentMap(ino)
                let change = map.setState(innerStart..<innerEnd, unwritten: true)
                try save(ino, map, change)
            } else {
                try removeRange(ino, innerStart..<innerEnd)
            }
            if range.lowerBound < innerStart { try zeroOnLUN(ino, range.lowerBound..<innerStart) }
            if innerEnd < range.upperBound { try zeroOnLUN(ino, innerEnd..<range.upperBound) }
        } else {
            try zeroOnLUN(ino, range)
        }
    }

    // MARK: open files

    /// Notes an open of `ino`; returns the handle that names this open file until it is released.
    func opened(_ ino: UInt64) -> UInt64 {
        openCounts[ino, default: 0] += 1
        let handle = nextHandle
        nextHandle += 1
        openHandles[handle] = ino
        return handle
    }

    func released(_ ino: UInt64, handle: UInt64) throws(Errno) {
        openHandles[handle] = nil
        unreportedFlushErrors[handle] = nil
        let count = openCounts[ino, default: 1] - 1
        openCounts[ino] = count > 0 ? count : nil
        guard count <= 0 else { return }
        if orphans.contains(ino) {
            try mutate { try deleteInode(ino) }
        }
    }

    // MARK: directories

    func readdir(_ ino: UInt64, after cookie: Int64, limit: Int, plus: Bool) throws(Errno) -> [DirectoryEntry] {
        let attributes = try attributes(ino)
        guard attributes.isDirectory else { throw Errno.notDirectory }
        var entries: [DirectoryEntry] = []
        if cookie < 1 {
            entries.append(DirectoryEntry(name: [46], ino: ino, mode: UInt32(S_IFDIR), nextCookie: 1,
                                          attributes: plus ? attributes : nil))
        }
        if cookie < 2 {
            let parent = try parentOf(directory: ino)
            entries.append(DirectoryEntry(name: [46, 46], ino: parent, mode: UInt32(S_IFDIR), nextCookie: 2, attributes: nil))
        }
        let rows = try read { () throws -> [DirectoryEntry] in
            let statement = try db.statement(plus
                ? """
                  SELECT d.id, d.name, d.ino, d.mode, \(Self.joinedAttributeColumns)
                  FROM dirents d JOIN inodes i ON i.ino = d.ino WHERE d.parent = ? AND d.id > ? ORDER BY d.id LIMIT ?
                  """
                : "SELECT id, name, ino, mode FROM dirents WHERE parent = ? AND id > ? ORDER BY id LIMIT ?")
            statement.bind(.int(ino), .integer(max(0, cookie - 2)), .int(limit))
            var rows: [DirectoryEntry] = []
            while try statement.step() {
                let child = UInt64(statement.int64(2))
                var entry = DirectoryEntry(name: statement.blob(1), ino: child, mode: UInt32(statement.int64(3)),
                                           nextCookie: statement.int64(0) + 2, attributes: nil)
                if plus { entry.attributes = self.attributes(child, from: statement, at: 4) }
                rows.append(entry)
            }
            return rows
        }
        return entries + rows
    }

    // MARK: extended attributes

    func setXattr(_ ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool) throws(Errno) {
        try requireMetadataSpace()
        try mutate {
            _ = try attributes(ino)
            let exists = try xattr(ino, name) != nil
            if create && exists { throw Errno.exists }
            if replace && !exists { throw Errno.noData }
            try db.statement("INSERT OR REPLACE INTO xattrs(ino, name, value) VALUES (?, ?, ?)")
                .bind(.int(ino), .blob(name), .blob(value)).run()
            try touchInode(ino, now: Time.nowNanoseconds())
        }
    }

    private func xattr(_ ino: UInt64, _ name: [UInt8]) throws -> [UInt8]? {
        let statement = try db.statement("SELECT value FROM xattrs WHERE ino = ? AND name = ?")
        statement.bind(.int(ino), .blob(name))
        return try statement.step() ? statement.blob(0) : nil
    }

    func getXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) -> [UInt8] {
        let value = try read { try xattr(ino, name) }
        guard let value else {
            _ = try attributes(ino)
            throw Errno.noData
        }
        return value
    }

    func listXattrs(_ ino: UInt64) throws(Errno) -> [[UInt8]] {
        _ = try attributes(ino)
        return try read {
            let statement = try db.statement("SELECT name FROM xattrs WHERE ino = ? ORDER BY name")
            statement.bind(.int(ino))
            var names: [[UInt8]] = []
            while try statement.step() { names.append(statement.blob(0)) }
            return names
        }
    }

    func removeXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) {
        try mutate {
            guard try xattr(ino, name) != nil else { throw Errno.noData }
            try db.statement("DELETE FROM xattrs WHERE ino = ? AND name = ?").bind(.int(ino), .blob(name)).run()
            try touchInode(ino, now: Time.nowNanoseconds())
        }
    }

    // MARK: volume

    /// Inode counts are estimates: an inode costs about `bytesPerInode` of database. Free inodes fall by one per
    /// inode made, and reach zero when the database stops growing.
    func statistics() -> VolumeStatistics {
        let bytesPerInode: Int64 = 256
        let region = superblock.metadataRegion.databaseCapacity
        let budget = (region - max(1 << 20, region / 8)) / bytesPerInode
        let full = ((try? metadataBytesLeft()) ?? 0) <= 0
        let freeInodes = full ? 0 : UInt64(max(0, budget - inodeCount))
        return VolumeStatistics(blockSize: UInt64(blockSize), totalBlocks: UInt64(superblock.dataLength / blockSize),
                                freeBlocks: UInt64((freeBytes + freedBytes) / blockSize),
                                totalInodes: UInt64(inodeCount) + freeInodes, freeInodes: freeInodes)
    }
}

/// A process-wide counter for unique VFS names; the only shared state, and atomic.
final class AtomicCounter: Sendable {
    private let value = Locked<Int>(0)
    func next() -> Int { value.withLock { $0 += 1; return $0 } }
}
