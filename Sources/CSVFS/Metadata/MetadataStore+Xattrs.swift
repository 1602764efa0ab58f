import Glibc

/// Extended attributes.
extension MetadataStore {
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
            changedSinceFlush.insert(ino)
        }
    }

    func xattr(_ ino: UInt64, _ name: [UInt8]) throws -> [UInt8]? {
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
            changedSinceFlush.insert(ino)
        }
    }
}
