import Glibc

/// Transactions (one per operation, with one retry after a sync when freed space waits), reads, the commit of
/// pending writes, and syncs in two halves around the LUN flush.
extension MetadataStore {
    /// One operation, one transaction, committed before the operation answers: whatever a caller was told
    /// happened survives a crash of this process (the kernel never tells a FUSE server about syncfs, so this
    /// is what makes syncfs keep its word). An operation that finds no space while freed space waits for a
    /// sync gets one more try after that sync.
    func mutate<R>(_ body: () throws -> R) throws(Errno) -> R {
        do {
            return try transaction(body)
        } catch let error where error == .noSpace && space.freedBytes > 0 {
            try sync()
            return try transaction(body)
        }
    }

    func transaction<R>(_ body: () throws -> R) throws(Errno) -> R {
        do {
            let result = try db.transaction {
                try applyPendingWrites()
                let result = try body()
                if let servedRequest { try recordApplied(servedRequest) }
                return result
            }
            // The VFS writes the log when it sees the commit frame; this covers any commit it did not see.
            try vfs.flushLog()
            // Overwrites are noted as changes here, once per commit, not on the write path.
            changedSinceFlush.formUnion(pendingWrites.keys)
            pendingWrites.removeAll()
            commitGeneration += 1
            return result
        } catch {
            dropCachesAfterRollback()
            throw Self.errno(error)
        }
    }

    /// Notes, in the transaction of its change, that another node's request took effect. A node's sequence
    /// numbers only grow, and it sends a request again only while it waits for its answer: the records of
    /// a node far behind its latest are dropped now and then.
    private func recordApplied(_ id: MetadataRequestID) throws {
        try db.statement("INSERT OR IGNORE INTO applied_requests(node, sequence) VALUES (?, ?)")
            .bind(.integer(Int64(id.node)), .integer(Int64(bitPattern: id.sequence))).run()
        recordsSincePruning += 1
        guard recordsSincePruning >= Self.appliedRequestsPruningInterval else { return }
        recordsSincePruning = 0
        try db.statement("DELETE FROM applied_requests WHERE node = ? AND sequence < ?")
            .bind(.integer(Int64(id.node)), .integer(Int64(bitPattern: id.sequence) - Self.appliedRequestsKept)).run()
    }

    static let appliedRequestsPruningInterval = 1024
    /// How far behind a node's latest request its records are kept: far more than it ever has unanswered.
    static let appliedRequestsKept: Int64 = 1 << 20

    /// Whether the change of another node's request was committed.
    func wasApplied(_ id: MetadataRequestID) throws(Errno) -> Bool {
        try read {
            let statement = try db.statement("SELECT 1 FROM applied_requests WHERE node = ? AND sequence = ?")
            statement.bind(.integer(Int64(id.node)), .integer(Int64(bitPattern: id.sequence)))
            return try statement.step()
        }
    }

    static func errno(_ error: any Error) -> Errno {
        switch error {
        case let error as Errno: return error
        case let error as SQLiteError: return error.errno
        default: return .io
        }
    }

    /// A rolled-back transaction leaves memory ahead of the database: reload what is cached.
    func dropCachesAfterRollback() {
        extentCache.removeAll()
        try? loadCounters()
        orphans = (try? loadOrphans()) ?? orphans
    }

    func loadOrphans() throws -> Set<UInt64> {
        defer { db.finishStatements() }
        let statement = try db.statement("SELECT ino FROM orphans")
        var result: Set<UInt64> = []
        while try statement.step() { result.insert(UInt64(statement.int64(0))) }
        return result
    }

    func read<R>(_ body: () throws -> R) throws(Errno) -> R {
        defer { db.finishStatements() }
        do {
            return try body()
        } catch {
            throw Self.errno(error)
        }
    }

    func applyPendingWrites() throws {
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
        /// The files changed (data or attributes) since the previous flush began.
        var changed: Set<UInt64> = []
    }

    func beginSync() throws(Errno) -> SyncTicket {
        try commit()
        let freed = space.freedBytes > 0 ? try freedRuns() : []
        let changed = changedSinceFlush
        changedSinceFlush = []
        return SyncTicket(generation: commitGeneration,
                          needsFlush: commitGeneration > syncedGeneration || !freed.isEmpty || !changed.isEmpty,
                          freed: freed, changed: changed)
    }

    /// The flush after `beginSync` failed: what it covered is still not durable, and each file open on what it
    /// covered hears of it at its next fsync.
    func flushFailed(_ ticket: SyncTicket, _ error: Errno) {
        changedSinceFlush.formUnion(ticket.changed)
        openFiles.flushFailed(covering: ticket.changed, error)
    }

    /// A flush outside a sync failed: nothing changed since the last flush began is known to be durable.
    func flushFailed(_ error: Errno) {
        openFiles.flushFailed(covering: changedSinceFlush.union(pendingWrites.keys), error)
    }

    /// The failed flush the open file `handle` has not heard of yet, if any; it hears of it once.
    func takeFlushError(handle: UInt64) -> Errno? {
        openFiles.takeFlushError(handle: handle)
    }

    /// After the flush that followed `beginSync`: the frees it covered become allocatable.
    func endSync(_ ticket: SyncTicket) throws(Errno) {
        syncedGeneration = max(syncedGeneration, ticket.generation)
        guard !ticket.freed.isEmpty else { return }
        try mutate {
            for run in ticket.freed {
                _ = try space.reclaim(run)
            }
        }
    }

    func freedRuns() throws(Errno) -> [(start: Int64, length: Int64)] {
        try read { try space.freedRuns() }
    }

    /// Runs repair statements (fsck) as one operation.
    func repair(_ statements: [String]) throws(Errno) {
        try mutate { for sql in statements { try db.execute(sql) } }
    }
}
