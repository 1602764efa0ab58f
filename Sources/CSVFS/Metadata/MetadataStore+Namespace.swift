import Glibc

/// The namespace: names, inode creation and deletion, links, rename, readdir.
extension MetadataStore {
    func directory(_ ino: UInt64) throws -> InodeAttributes {
        let attributes = try attributes(ino)
        guard attributes.isDirectory else { throw Errno.notDirectory }
        guard attributes.nlink > 0 else { throw Errno.noEntry }
        return attributes
    }

    func entry(parent: UInt64, name: [UInt8]) throws -> (ino: UInt64, mode: UInt32)? {
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

    func touchDirectory(_ ino: UInt64, nlinkDelta: Int64 = 0, now: Int64) throws {
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
            changedSinceFlush.insert(UInt64(ino))
            return InodeAttributes(ino: UInt64(ino), mode: mode, nlink: isDirectory ? 2 : 1, uid: caller.uid, gid: gid,
                                   size: size, allocated: 0, rdev: rdev, atime: now, mtime: now, ctime: now)
        }
    }

    /// A number no inode of this volume has had; inside the transaction that creates the inode.
    func takeInodeNumber() throws -> Int64 {
        if nextInode >= inodeNumbersReserved {
            try db.statement("INSERT OR REPLACE INTO volume(key, value) VALUES ('inode_numbers_reserved', ?)")
                .bind(.integer(nextInode + Self.inodeNumberBatch)).run()
            inodeNumbersReserved = nextInode + Self.inodeNumberBatch
        }
        defer { nextInode += 1 }
        return nextInode
    }

    func insertEntry(parent: UInt64, name: [UInt8], ino: UInt64, mode: UInt32) throws {
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
            changedSinceFlush.insert(ino)
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

    func requireEmpty(_ directory: UInt64) throws {
        let statement = try db.statement("SELECT 1 FROM dirents WHERE parent = ? LIMIT 1")
        statement.bind(.int(directory))
        if try statement.step() { throw Errno.notEmpty }
    }

    /// Drops one name of an inode; the inode goes when its last name goes, unless it is still open.
    func removeEntry(parent: UInt64, name: [UInt8], ino: UInt64, now: Int64) throws {
        try db.statement("DELETE FROM dirents WHERE parent = ? AND name = ?").bind(.int(parent), .blob(name)).run()
        let attributes = try attributes(ino)
        let remaining: UInt32 = attributes.isDirectory ? 0 : attributes.nlink - 1
        try db.statement("UPDATE inodes SET nlink = ?, ctime = ? WHERE ino = ?").bind(.int(remaining), .integer(now), .int(ino)).run()
        guard remaining == 0 else { return }
        if openFiles.isOpen(ino) {
            try db.statement("INSERT OR IGNORE INTO orphans(ino) VALUES (?)").bind(.int(ino)).run()
            orphans.insert(ino)
        } else {
            try deleteInode(ino)
        }
    }

    func deleteInode(_ ino: UInt64) throws {
        var map = try extentMap(ino)
        let (_, freed) = map.remove(0..<Int64.max)
        for piece in freed { try space.release(piece.physical, piece.length) }
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

    func setEntry(parent: UInt64, name: [UInt8], to entry: (ino: UInt64, mode: UInt32)) throws {
        try db.statement("UPDATE dirents SET ino = ?, mode = ? WHERE parent = ? AND name = ?")
            .bind(.int(entry.ino), .int(entry.mode), .int(parent), .blob(name)).run()
    }

    func setParent(_ directory: UInt64, _ parent: UInt64) throws {
        try db.statement("UPDATE inodes SET parent = ? WHERE ino = ?").bind(.int(parent), .int(directory)).run()
    }

    func touchInode(_ ino: UInt64, now: Int64) throws {
        try db.statement("UPDATE inodes SET ctime = ? WHERE ino = ?").bind(.integer(now), .int(ino)).run()
    }

    /// Whether `ancestor` is `directory` or one of the directories above it.
    func isAncestor(_ ancestor: UInt64, of directory: UInt64) throws -> Bool {
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
}
