import Glibc

/// Metadata space: what the database may still grow by, measured when `MetadataSpaceGauge` says.
extension MetadataStore {
    /// Throws ENOSPC when an operation that grows the metadata must not (see `MetadataSpaceGauge`).
    func requireMetadataSpace() throws(Errno) {
        try metadataSpace.require { () throws(Errno) in try metadataBytesLeft() }
    }

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
