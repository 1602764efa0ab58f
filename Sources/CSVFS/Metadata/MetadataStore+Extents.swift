import Glibc

/// Each file's extent map: cached, saved row by row, and grown by allocating its holes.
extension MetadataStore {
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

    func save(_ ino: UInt64, _ map: ExtentMap, _ change: ExtentMap.Change) throws {
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

    func removeRange(_ ino: UInt64, _ range: Range<Int64>) throws {
        var map = try extentMap(ino)
        let (change, freed) = map.remove(range)
        guard !change.removed.isEmpty else { return }
        try save(ino, map, change)
        for piece in freed { try space.release(piece.physical, piece.length) }
    }

    /// Allocates the holes of `range` (block-aligned) as unwritten extents, near the file's neighbouring data.
    func allocateHoles(_ ino: UInt64, _ range: Range<Int64>) throws {
        try requireMetadataSpace()
        var map = try extentMap(ino)
        let holes = map.segments(in: range).filter { $0.physical == nil }
        let needed = holes.reduce(0) { $0 + $1.length }
        guard needed > 0 else { return }
        guard needed <= space.freeBytes else { throw Errno.noSpace }
        var new: [Extent] = []
        for hole in holes {
            var logical = hole.logical
            var remaining = hole.length
            var goal = Self.goal(map, before: hole.logical)
            while remaining > 0 {
                let piece = try space.allocate(remaining, goal: goal)
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
    static func goal(_ map: ExtentMap, before logical: Int64) -> Int64? {
        let index = map.firstIndex(endingAfter: logical)
        guard index > 0 else { return nil }
        let previous = map.extents[index - 1]
        return previous.physicalEnd + (logical - previous.logicalEnd)
    }
}
