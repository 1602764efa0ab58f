import Glibc

/// The allocator: free runs of the data region, and runs freed but not yet durable.
extension MetadataStore {
    func freedRuns() throws(Errno) -> [(start: Int64, length: Int64)] {
        try read {
            let statement = try db.statement("SELECT start, length FROM freed_space")
            var runs: [(start: Int64, length: Int64)] = []
            while try statement.step() { runs.append((statement.int64(0), statement.int64(1))) }
            return runs
        }
    }

    /// Takes free space: from the goal if it is free, else the smallest free run that fits, else the largest.
    func allocateSpace(_ wanted: Int64, goal: Int64?) throws -> (start: Int64, length: Int64) {
        if let goal {
            let statement = try db.statement("SELECT start, length FROM free_space WHERE start <= ? ORDER BY start DESC LIMIT 1")
            statement.bind(.integer(goal))
            if try statement.step() {
                let start = statement.int64(0), length = statement.int64(1)
                if start + length > goal {
                    let taken = min(wanted, start + length - goal)
                    try takeSpace(run: (start, length), from: goal, length: taken)
                    return (goal, taken)
                }
            }
        }
        let fit = try db.statement("SELECT start, length FROM free_space WHERE length >= ? ORDER BY length, start LIMIT 1")
        fit.bind(.integer(wanted))
        if try fit.step() {
            let start = fit.int64(0), length = fit.int64(1)
            try takeSpace(run: (start, length), from: start, length: wanted)
            return (start, wanted)
        }
        let largest = try db.statement("SELECT start, length FROM free_space ORDER BY length DESC LIMIT 1")
        guard try largest.step() else { throw Errno.noSpace }
        let start = largest.int64(0), length = largest.int64(1)
        try takeSpace(run: (start, length), from: start, length: length)
        return (start, length)
    }

    func takeSpace(run: (start: Int64, length: Int64), from start: Int64, length: Int64) throws {
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
    func releaseSpace(_ start: Int64, _ length: Int64) throws {
        try db.statement("INSERT INTO freed_space(start, length) VALUES (?, ?)").bind(.integer(start), .integer(length)).run()
        freedBytes += length
    }

    /// Returns a run to free space, merged with free neighbours.
    func addFreeSpace(_ start: Int64, _ length: Int64) throws {
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
