import Glibc

/// The write protocol (`prepareWrite`, the data written, `completeWrite`) and fallocate.
extension MetadataStore {
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
            return
        }
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
            changedSinceFlush.insert(ino)
        }
    }

    func sizeOnDisk(_ ino: UInt64) throws(Errno) -> UInt64 {
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
            changedSinceFlush.insert(ino)
        }
    }

    /// Frees (or marks unwritten) the blocks `range` covers whole, so they read as zeros. Its partial blocks are
    /// the data path's to zero on the LUN, before (`DataPath.fallocate`).
    func clear(_ ino: UInt64, _ range: Range<Int64>, keepAllocated: Bool) throws {
        let innerStart = (range.lowerBound + blockSize - 1) / blockSize * blockSize
        let innerEnd = range.upperBound / blockSize * blockSize
        guard innerStart < innerEnd else { return }
        if keepAllocated {
            var map = try extentMap(ino)
            let change = map.setState(innerStart..<innerEnd, unwritten: true)
            try save(ino, map, change)
        } else {
            try removeRange(ino, innerStart..<innerEnd)
        }
    }
}
