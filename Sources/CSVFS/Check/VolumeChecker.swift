import Glibc

/// One problem found by the checker, and whether --repair fixed it.
public struct CheckFinding: Sendable, CustomStringConvertible {
    public var problem: String
    public var repaired: Bool
    public var description: String { repaired ? "\(problem) (repaired)" : problem }
}

public struct CheckReport: Sendable {
    public var findings: [CheckFinding] = []
    public var inodes = 0
    public var directories = 0
    public var usedBytes: Int64 = 0
    public var freeBytes: Int64 = 0
    public var orphans = 0
    /// Clean when nothing is wrong, or everything wrong was repaired.
    public var isClean: Bool { findings.allSatisfy(\.repaired) }
}

/// fsck: checks superblocks, the database's own integrity, and the filesystem's invariants on top of it.
///
/// Without `repair` nothing is written: the LUN is opened read-only (a read-only image, loop device or mount
/// will do), a mounted volume is read as it is (`csvfs fsck` warns then, as `e2fsck -n` does), and SQLite
/// replays a crashed mount's log in memory only. A repair claims the volume, so it refuses a mounted one.
public enum VolumeChecker {
    public static func check(path: String, repair: Bool) throws -> CheckReport {
        var report = CheckReport()
        let device = try LUNDevice.open(path, readOnly: !repair)
        defer { device.close() }
        if repair { try device.claimExclusive() }
        let (superblock, _) = try device.superblock()
        let (primary, backup) = device.readSuperblocks()
        for (copy, result) in [(LUNDevice.SuperblockCopy.primary, primary), (.backup, backup)] {
            let problem: String?
            switch result {
            case .success(var block):
                // The epoch is stamped on one copy, then the other: a power cut between them leaves them apart,
                // which is no damage (the copy in use is the one read first, and the next coordinator stamps both).
                block.epoch = superblock.epoch
                problem = block == superblock ? nil : "\(copy) superblock differs from the one in use"
            case .failure(let error): problem = "\(copy) superblock: \(error)"
            }
            guard let problem else { continue }
            if repair { try device.writeSuperblock(superblock, copies: [copy]) }
            report.findings.append(CheckFinding(problem: problem, repaired: repair))
        }
        let store = try MetadataStore.open(lun: device.fd, superblock: superblock, readOnly: !repair)
        defer { store.close() }
        try InvariantChecker(store: store, superblock: superblock, repair: repair).run(into: &report)
        return report
    }
}

/// The filesystem invariants, checked with SQL over the metadata database.
struct InvariantChecker {
    let store: MetadataStore
    let superblock: Superblock
    let repair: Bool
    private var db: SQLiteConnection { store.db }

    init(store: MetadataStore, superblock: Superblock, repair: Bool) {
        self.store = store
        self.superblock = superblock
        self.repair = repair
    }

    func run(into report: inout CheckReport) throws {
        let integrity = try db.statement("PRAGMA integrity_check")
        var messages: [String] = []
        while try integrity.step() { messages.append(integrity.text(0)) }
        if messages != ["ok"] {
            // A damaged B-tree is beyond repair here: report it and stop before trusting any row.
            report.findings.append(CheckFinding(problem: "database integrity: " + messages.prefix(5).joined(separator: "; "),
                                                repaired: false))
            return
        }
        try checkNamespace(into: &report)
        try checkSpace(into: &report)
    }

    private func rows(_ sql: String, _ values: SQLiteValue...) throws -> [[Int64]] {
        let statement = try db.statement(sql)
        for (index, value) in values.enumerated() { statement.bind(value, at: Int32(index + 1)) }
        var result: [[Int64]] = []
        while try statement.step() {
            result.append((0..<sqlite3ColumnCount(statement)).map { statement.int64(Int32($0)) })
        }
        return result
    }

    private func sqlite3ColumnCount(_ statement: SQLiteStatement) -> Int { statement.columnCount }

    private func fix(_ report: inout CheckReport, _ problem: String, _ repairSQL: [String]) throws {
        if repair { try store.repair(repairSQL) }
        report.findings.append(CheckFinding(problem: problem, repaired: repair))
    }

    private func checkNamespace(into report: inout CheckReport) throws {
        report.inodes = Int(try rows("SELECT COUNT(*) FROM inodes")[0][0])
        report.directories = Int(try rows("SELECT COUNT(*) FROM inodes WHERE (mode & \(S_IFMT)) = \(S_IFDIR)")[0][0])
        report.orphans = Int(try rows("SELECT COUNT(*) FROM orphans")[0][0])
        let root = try rows("SELECT mode FROM inodes WHERE ino = 1")
        if root.isEmpty || UInt32(root[0][0]) & UInt32(S_IFMT) != UInt32(S_IFDIR) {
            report.findings.append(CheckFinding(problem: "root directory missing or not a directory", repaired: false))
            return
        }
        for row in try rows("SELECT d.id, d.parent, d.ino FROM dirents d LEFT JOIN inodes i ON i.ino = d.ino WHERE i.ino IS NULL") {
            try fix(&report, "entry \(row[0]) in directory \(row[1]) names missing inode \(row[2])",
                    ["DELETE FROM dirents WHERE id = \(row[0])"])
        }
        for row in try rows("""
            SELECT d.id, d.parent FROM dirents d LEFT JOIN inodes p ON p.ino = d.parent
            WHERE p.ino IS NULL OR (p.mode & \(S_IFMT)) != \(S_IFDIR)
            """) {
            try fix(&report, "entry \(row[0]) sits in \(row[1]), which is not a directory", ["DELETE FROM dirents WHERE id = \(row[0])"])
        }
        for row in try rows("SELECT d.id, d.ino FROM dirents d JOIN inodes i ON i.ino = d.ino WHERE d.mode != (i.mode & \(S_IFMT))") {
            try fix(&report, "entry \(row[0]) records the wrong file type for inode \(row[1])",
                    ["UPDATE dirents SET mode = (SELECT mode & \(S_IFMT) FROM inodes WHERE ino = \(row[1])) WHERE id = \(row[0])"])
        }
        // Link counts: names for files; 2 + subdirectories for directories.
        for row in try rows("""
            SELECT i.ino, i.nlink, (SELECT COUNT(*) FROM dirents d WHERE d.ino = i.ino) AS names,
                   (SELECT COUNT(*) FROM dirents d WHERE d.parent = i.ino AND d.mode = \(S_IFDIR)) AS subdirectories,
                   (i.mode & \(S_IFMT)) = \(S_IFDIR) AS isDirectory, i.ino IN (SELECT ino FROM orphans) AS isOrphan
            FROM inodes i
            """) {
            let (ino, nlink, names, subdirectories, isDirectory, isOrphan) = (row[0], row[1], row[2], row[3], row[4] != 0, row[5] != 0)
            if isDirectory {
                if ino != 1 && names != 1 {
                    report.findings.append(CheckFinding(problem: "directory \(ino) has \(names) names", repaired: false))
                }
                if nlink != 2 + subdirectories {
                    try fix(&report, "directory \(ino) link count \(nlink), expected \(2 + subdirectories)",
                            ["UPDATE inodes SET nlink = \(2 + subdirectories) WHERE ino = \(ino)"])
                }
            } else if names == 0 && !isOrphan {
                try fix(&report, "inode \(ino) has no name and is not an orphan",
                        ["UPDATE inodes SET nlink = 0 WHERE ino = \(ino)", "INSERT OR IGNORE INTO orphans(ino) VALUES (\(ino))"])
            } else if nlink != names {
                try fix(&report, "inode \(ino) link count \(nlink), expected \(names)",
                        ["UPDATE inodes SET nlink = \(names) WHERE ino = \(ino)"])
            }
        }
        for row in try rows("""
            SELECT i.ino, i.parent FROM inodes i WHERE (i.mode & \(S_IFMT)) = \(S_IFDIR) AND i.ino != 1
            AND i.parent != COALESCE((SELECT d.parent FROM dirents d WHERE d.ino = i.ino LIMIT 1), -1)
            """) {
            try fix(&report, "directory \(row[0]) records parent \(row[1]) but is named elsewhere",
                    ["UPDATE inodes SET parent = (SELECT parent FROM dirents WHERE ino = \(row[0]) LIMIT 1) WHERE ino = \(row[0])"])
        }
        // Numbers at or above the reservation could be handed out again (a volume without one has made no inode yet).
        let highest = try rows("SELECT COALESCE(MAX(ino), 1) FROM inodes")[0][0]
        let reserved = try rows("SELECT COALESCE(MAX(value), 0) FROM volume WHERE key = 'inode_numbers_reserved'")[0][0]
        if reserved > 0 && highest >= reserved {
            try fix(&report, "inode \(highest) is at or above the inode numbers reserved (\(reserved)): its number could be handed out again",
                    ["INSERT OR REPLACE INTO volume(key, value) VALUES ('inode_numbers_reserved', \(highest + 1))"])
        }
        // Every directory must reach the root; a cycle would hide a subtree.
        var parents: [Int64: Int64] = [:]
        for row in try rows("SELECT ino, parent FROM inodes WHERE (mode & \(S_IFMT)) = \(S_IFDIR)") { parents[row[0]] = row[1] }
        for start in parents.keys {
            var current = start, steps = 0
            while current != 1, let next = parents[current], steps <= parents.count {
                current = next
                steps += 1
            }
            if current != 1 {
                report.findings.append(CheckFinding(problem: "directory \(start) is not reachable from the root", repaired: false))
            }
        }
        if repair {
            try store.reclaimOrphans()
        }
    }

    private func checkSpace(into report: inout CheckReport) throws {
        let block = Int64(superblock.blockSize)
        let dataStart = superblock.dataOffset, dataEnd = superblock.dataOffset + superblock.dataLength
        for row in try rows("""
            SELECT ino, logical, physical, length FROM extents
            WHERE length <= 0 OR logical % \(block) != 0 OR physical % \(block) != 0 OR length % \(block) != 0
               OR physical < \(dataStart) OR physical + length > \(dataEnd)
            """) {
            report.findings.append(CheckFinding(problem: "inode \(row[0]) extent at \(row[1]) (LUN \(row[2]), \(row[3]) bytes) is malformed or outside the data region", repaired: false))
        }
        for row in try rows("SELECT e.ino FROM extents e LEFT JOIN inodes i ON i.ino = e.ino WHERE i.ino IS NULL GROUP BY e.ino") {
            try fix(&report, "extents of missing inode \(row[0])", ["DELETE FROM extents WHERE ino = \(row[0])"])
        }
        for row in try rows("""
            SELECT i.ino, i.allocated, COALESCE((SELECT SUM(length) FROM extents e WHERE e.ino = i.ino), 0) FROM inodes i
            WHERE i.allocated != COALESCE((SELECT SUM(length) FROM extents e WHERE e.ino = i.ino), 0)
            """) {
            try fix(&report, "inode \(row[0]) counts \(row[1]) allocated bytes, its extents hold \(row[2])",
                    ["UPDATE inodes SET allocated = \(row[2]) WHERE ino = \(row[0])"])
        }
        // Extents and free runs must tile the data region exactly: no overlap (two owners), no gap (leaked space).
        let statement = try db.statement("""
            SELECT physical, length, ino FROM extents UNION ALL SELECT start, length, 0 FROM free_space
            UNION ALL SELECT start, length, 0 FROM freed_space ORDER BY 1
            """)
        var position = dataStart
        var leaks: [(Int64, Int64)] = []
        while try statement.step() {
            let start = statement.int64(0), length = statement.int64(1), owner = statement.int64(2)
            if owner == 0 { report.freeBytes += length } else { report.usedBytes += length }
            if start < position {
                report.findings.append(CheckFinding(
                    problem: "LUN range \(start)+\(length) (\(owner == 0 ? "free" : "inode \(owner)")) overlaps what precedes it",
                    repaired: false))
            } else if start > position {
                leaks.append((position, start - position))
            }
            position = max(position, start + length)
        }
        if position < dataEnd { leaks.append((position, dataEnd - position)) }
        for (start, length) in leaks {
            try fix(&report, "LUN range \(start)+\(length) is neither used nor free",
                    ["INSERT INTO free_space(start, length) VALUES (\(start), \(length))"])
        }
    }
}
