import Glibc

/// Metadata-space accounting: growth of the database stops (ENOSPC) before SQLite could meet a full region.
extension MetadataStore {
    /// Operations that grow the metadata stop (ENOSPC) while the database and the log together come near the
    /// database's capacity. SQLite meeting a full region mid-commit may roll back more than the
    /// failing statement, so it must never get there; deletions, which free space, still go through.
    ///
    /// Measuring costs two statements, so while plenty is left it is measured every `spaceCheckInterval`
    /// operations only: that many operations cannot grow the database by `plentyOfSpace`.
    func requireMetadataSpace() throws(Errno) {
        if lastSpaceLeft > Self.plentyOfSpace && operationsSinceSpaceCheck < Self.spaceCheckInterval {
            operationsSinceSpaceCheck += 1
            return
        }
        lastSpaceLeft = try metadataBytesLeft()
        operationsSinceSpaceCheck = 0
        if lastSpaceLeft <= 0 { throw Errno.noSpace }
    }

    static let spaceCheckInterval = 32
    static let plentyOfSpace: Int64 = 16 << 20

    /// What the database may still grow by before growth stops.
    func metadataBytesLeft() throws(Errno) -> Int64 {
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
}
