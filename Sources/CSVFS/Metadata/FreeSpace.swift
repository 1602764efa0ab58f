/// The allocator of the data region: runs free to allocate (`free_space`), and runs freed since the last sync
/// (`freed_space`), which become allocatable once their freeing is durable; a crash could otherwise bring back
/// a deleted file whose blocks hold another's data. Works inside the store's transactions.
final class FreeSpace {
    /// Unowned: the connection's owner closes it (before the VFS it runs on goes), not this.
    private unowned let db: SQLiteConnection
    /// Bytes in free runs.
    private(set) var freeBytes: Int64 = 0
    /// Bytes freed since the last sync: not allocatable until that freeing is durable.
    private(set) var freedBytes: Int64 = 0

    init(db: SQLiteConnection) { self.db = db }

    /// Counts what the tables hold (after opening, or a rollback).
    func load() throws {
        let free = try db.statement("SELECT COALESCE(SUM(length), 0) FROM free_space")
        _ = try free.step()
        freeBytes = free.int64(0)
        let freed = try db.statement("SELECT COALESCE(SUM(length), 0) FROM freed_space")
        _ = try freed.step()
        freedBytes = freed.int64(0)
    }

    func freedRuns() throws -> [(start: Int64, length: Int64)] {
        let statement = try db.statement("SELECT start, length FROM freed_space")
        var runs: [(start: Int64, length: Int64)] = []
        while try statement.step() { runs.append((statement.int64(0), statement.int64(1))) }
        return runs
    }

    /// Takes free space: from the goal if it is free, else the smallest free run that fits, else the largest.
    func allocate(_ wanted: Int64, goal: Int64?) throws -> (start: Int64, length: Int64) {
        if let goal {
            let statement = try db.statement("SELECT start, length FROM free_space WHERE start <= ? ORDER BY start DESC LIMIT 1")
            statement.bind(.integer(goal))
            if try statement.step() {
                let start = statement.int64(0), length = statement.int64(1)
                if start + length > goal {
                    let taken = min(wanted, start + length - goal)
                    try take(run: (start, length), from: goal, length: taken)
                    return (goal, taken)
                }
            }
        }
        let fit = try db.statement("SELECT start, length FROM free_space WHERE length >= ? ORDER BY length, start LIMIT 1")
        fit.bind(.integer(wanted))
        if try fit.step() {
            let start = fit.int64(0), length = fit.int64(1)
            try take(run: (start, length), from: start, length: wanted)
            return (start, wanted)
        }
        let largest = try db.statement("SELECT start, length FROM free_space ORDER BY length DESC LIMIT 1")
        guard try largest.step() else { throw Errno.noSpace }
        let start = largest.int64(0), length = largest.int64(1)
        try take(run: (start, length), from: start, length: length)
        return (start, length)
    }

    private func take(run: (start: Int64, length: Int64), from start: Int64, length: Int64) throws {
        try db.statement("DELETE FROM free_space WHERE start = ?").bind(.integer(run.start)).run()
        if start > run.start {
            try db.statement("INSERT INTO free_space(start, length) VALUES (?, ?)").bind(.integer(run.start), .integer(start - run.start)).run()
        }
        let end = start + length, runEnd = run.start + run.length
        if end < runEnd {
            try db.statement("INSERT INTO free_space(start, length) VALUES (?, ?)").bind(.integer(end), .integer(runEnd - end)).run()
        }
        freeBytes -= length
    }

    /// Gives up a run of a file's blocks; it becomes allocatable at the next sync.
    func release(_ start: Int64, _ length: Int64) throws {
        try db.statement("INSERT INTO freed_space(start, length) VALUES (?, ?)").bind(.integer(start), .integer(length)).run()
        freedBytes += length
    }

    /// Makes a freed run allocatable, now that its freeing is durable. False when it was already (a sync inside
    /// the store, for an operation short of space, may have reclaimed it).
    func reclaim(_ run: (start: Int64, length: Int64)) throws -> Bool {
        try db.statement("DELETE FROM freed_space WHERE start = ?").bind(.integer(run.start)).run()
        guard db.changes == 1 else { return false }
        try addFree(run.start, run.length)
        freedBytes -= run.length
        return true
    }

    /// Returns a run to free space, merged with free neighbours.
    private func addFree(_ start: Int64, _ length: Int64) throws {
        freeBytes += length
        var start = start, length = length
        let before = try db.statement("SELECT start, length FROM free_space WHERE start < ? ORDER BY start DESC LIMIT 1")
        before.bind(.integer(start))
        if try before.step(), before.int64(0) + before.int64(1) == start {
            let previousStart = before.int64(0)
            length += before.int64(1)
            try db.statement("DELETE FROM free_space WHERE start = ?").bind(.integer(previousStart)).run()
            start = previousStart
        }
        let after = try db.statement("SELECT length FROM free_space WHERE start = ?")
        after.bind(.integer(start + length))
        if try after.step() {
            let nextLength = after.int64(0)
            try db.statement("DELETE FROM free_space WHERE start = ?").bind(.integer(start + length)).run()
            length += nextLength
        }
        try db.statement("INSERT INTO free_space(start, length) VALUES (?, ?)").bind(.integer(start), .integer(length)).run()
    }
}
