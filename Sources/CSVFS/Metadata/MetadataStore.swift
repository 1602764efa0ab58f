import CSQLite
import Foundation
import Glibc

/// The metadata engine: namespace, inodes, extents, free space and xattrs in SQLite on the LUN.
///
/// Not thread-safe: `LocalMetadataService` owns it behind a mutex. Every mutation is one transaction.
/// Sizes and mtimes of writes that did not allocate are kept in memory (`pendingWrites`) and folded into the
/// next transaction, at flush/fsync/release, or by the periodic commit, so plain overwrites cost no SQL.
final class MetadataStore {
    static let rootInode = rootInodeNumber
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
    let space: FreeSpace
    var inodeCount: Int64
    /// The next inode number and directory entry id; they only grow while mounted, so the kernel never sees
    /// one number stand for two files.
    var nextInode: Int64 = 2
    var nextEntryID: Int64 = 1
    /// Inode numbers below this may have been handed out, by this mount or an earlier one. It is kept in the
    /// volume table and raised a batch at a time, so a number is never handed out twice over the volume's life:
    /// a node or an NFS client holding the number of a deleted file cannot reach a new one by it.
    var inodeNumbersReserved: Int64 = 0
    static let inodeNumberBatch: Int64 = 1024
    var extentCache: [UInt64: ExtentMap] = [:]
    var pendingWrites: [UInt64: (size: UInt64, mtime: Int64)] = [:]
    var openFiles = OpenFiles()
    /// Files whose data or attributes changed since the last flush of the LUN began: what a failing flush
    /// leaves not durable, so their open files hear of it.
    var changedSinceFlush: Set<UInt64> = []
    /// Inodes in the orphans table: unlinked while open.
    var orphans: Set<UInt64> = []

    /// Counts commits; `syncedGeneration` is the count the last completed flush of the LUN covered.
    /// The request of another node this call serves, if it must take effect once: each transaction records
    /// it (`applied_requests`).
    var servedRequest: MetadataRequestID?
    /// Records since the last pruning of `applied_requests`.
    var recordsSincePruning = 0
    var commitGeneration = 0
    var syncedGeneration = 0
    var metadataSpace = MetadataSpaceGauge()

    // MARK: opening

    private static let vfsCounter = AtomicCounter()

    private init(lun: FileDescriptor, superblock: Superblock, readOnly: Bool = false, epoch: VolumeEpoch? = nil) throws {
        self.lun = lun
        self.superblock = superblock
        self.readOnly = readOnly
        blockSize = Int64(superblock.blockSize)
        vfs = try LUNVirtualFileSystem(name: "csvfs-\(superblock.uuid.uuidString)-\(Self.vfsCounter.next())",
                                       lun: lun, region: superblock.metadataRegion, readOnly: readOnly,
                                       epoch: epoch)
        db = try SQLiteConnection(path: "metadata.db", vfs: vfs.name,
                                  flags: readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        // Exclusive locking before WAL: the WAL index then lives in heap memory, no shared memory needed.
        try db.execute("""
            PRAGMA locking_mode=EXCLUSIVE; PRAGMA page_size=\(Self.pageSize); PRAGMA journal_mode=WAL;
            PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-65536;
            PRAGMA wal_autocheckpoint=\(max(256, superblock.walCapacity / 4096 / 2));
            """)
        space = FreeSpace(db: db)
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
    /// `epoch`: the coordinator's, checked on the volume before each transaction writes.
    static func open(lun: FileDescriptor, superblock: Superblock, readOnly: Bool = false, epoch: VolumeEpoch? = nil) throws -> MetadataStore {
        let store: MetadataStore
        do {
            store = try MetadataStore(lun: lun, superblock: superblock, readOnly: readOnly, epoch: epoch)
            let check = try store.db.statement("SELECT value FROM volume WHERE key = 'schema_version'")
            guard try check.step(), check.int64(0) == MetadataSchema.version else {
                throw VolumeError.corruptMetadata("unknown schema version")
            }
            try store.loadCounters()
            if !readOnly {
                try store.db.execute(MetadataSchema.appliedRequests)
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

    func loadCounters() throws {
        try space.load()
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
    /// Deletes the inodes left unlinked by an earlier owner that nobody has open now.
    func reclaimOrphans() throws(Errno) {
        try mutate {
            let statement = try db.statement("SELECT ino FROM orphans")
            var orphans: [UInt64] = []
            while try statement.step() { orphans.append(UInt64(statement.int64(0))) }
            for ino in orphans where !openFiles.isOpen(ino) { try deleteInode(ino) }
        }
    }

    /// The open files `node` had under the coordinator before, as that one numbered them; those of inodes
    /// that no longer exist are dropped.
    func reclaimOpened(_ files: [OpenHandle], node: UInt32) throws(Errno) {
        try read {
            for file in files {
                let statement = try db.statement("SELECT 1 FROM inodes WHERE ino = ?")
                statement.bind(.int(file.ino))
                if try statement.step() { openFiles.reclaim(file.ino, handle: file.handle, node: node) }
                statement.reset()
            }
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
                                freeBlocks: UInt64((space.freeBytes + space.freedBytes) / blockSize),
                                totalInodes: UInt64(inodeCount) + freeInodes, freeInodes: freeInodes)
    }
}

/// A process-wide counter for unique VFS names; the only shared state, and atomic.
final class AtomicCounter: Sendable {
    let value = Locked<Int>(0)
    func next() -> Int { value.withLock { $0 += 1; return $0 } }
}
