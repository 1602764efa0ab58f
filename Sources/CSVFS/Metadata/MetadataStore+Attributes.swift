import Glibc

/// Inode attributes: reading them (with pending writes on top), setting them, truncation.
extension MetadataStore {
    func attributes(_ ino: UInt64) throws(Errno) -> InodeAttributes {
        try read { () throws -> InodeAttributes in
            let statement = try db.statement("SELECT \(Self.attributeColumns) FROM inodes WHERE ino = ?")
            statement.bind(.int(ino))
            guard try statement.step() else { throw Errno.noEntry }
            return attributes(ino, from: statement, at: 0)
        }
    }

    /// The inode columns `attributes(_:from:at:)` decodes, in its order.
    static let attributeColumns = "mode, nlink, uid, gid, size, allocated, rdev, atime, mtime, ctime"
    static let joinedAttributeColumns = "i.mode, i.nlink, i.uid, i.gid, i.size, i.allocated, i.rdev, i.atime, i.mtime, i.ctime"

    /// Decodes `attributeColumns` starting at column `first`, with what a pending write changed on top.
    func attributes(_ ino: UInt64, from statement: SQLiteStatement, at first: Int32) -> InodeAttributes {
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
                try truncate(ino, to: size)
                current.size = size
                if changes.mtime == nil { current.mtime = now }
            }
            current.ctime = now
            changedSinceFlush.insert(ino)
            try db.statement("UPDATE inodes SET mode = ?, uid = ?, gid = ?, size = ?, atime = ?, mtime = ?, ctime = ? WHERE ino = ?")
                .bind(.int(current.mode), .int(current.uid), .int(current.gid), .int(current.size),
                      .integer(current.atime), .integer(current.mtime), .integer(current.ctime), .int(ino)).run()
        }
        return try attributes(ino)
    }

    static func resolve(_ time: AttributeChanges.Time, now: Int64) -> Int64 {
        switch time {
        case .now: return now
        case .at(let value): return value
        }
    }

    /// Frees the blocks past the new end. The rest of the new last block is the data path's to zero, before
    /// (`DataPath.truncate`).
    func truncate(_ ino: UInt64, to newSize: UInt64) throws {
        let blockEnd = (Int64(newSize) + blockSize - 1) / blockSize * blockSize
        try removeRange(ino, blockEnd..<Int64.max)
    }
}
