@testable import CSVFS
import Testing

/// The allocator alone, over the metadata schema in an in-memory database.
@Suite struct FreeSpaceTests {
    let db: SQLiteConnection
    let space: FreeSpace

    /// Free: 0..<4096 and 16384..<81920.
    init() throws {
        db = try SQLiteConnection(path: ":memory:", vfs: "unix")
        try db.execute(MetadataSchema.create)
        try db.execute("INSERT INTO free_space(start, length) VALUES (0, 4096), (16384, 65536)")
        space = FreeSpace(db: db)
        try space.load()
    }

    func allocate(_ wanted: Int64, goal: Int64?) throws -> [Int64] {
        let piece = try space.allocate(wanted, goal: goal)
        return [piece.start, piece.length]
    }

    func freeRuns() throws -> [[Int64]] {
        let statement = try db.statement("SELECT start, length FROM free_space ORDER BY start")
        var runs: [[Int64]] = []
        while try statement.step() { runs.append([statement.int64(0), statement.int64(1)]) }
        return runs
    }

    @Test func takesTheGoalThenTheSmallestRunThatFitsThenTheLargest() throws {
        #expect(space.freeBytes == 69632)
        #expect(try allocate(8192, goal: 20480) == [20480, 8192], "the goal, inside a free run")
        #expect(try allocate(4096, goal: nil) == [0, 4096], "the smallest run that fits, the lowest of equals")
        #expect(try allocate(1 << 20, goal: nil) == [28672, 53248], "nothing fits: the largest run, whole")
        #expect(try freeRuns() == [[16384, 4096]])
        #expect(space.freeBytes == 4096)
        #expect(try allocate(4096, goal: 0) == [16384, 4096], "a goal that is not free: the fit instead")
        #expect(throws: Errno.noSpace) { try space.allocate(4096, goal: nil) }
        #expect(space.freeBytes == 0)
    }

    @Test func freedRunsWaitForReclaimThenMergeWithTheirNeighbours() throws {
        #expect(try allocate(8192, goal: 16384) == [16384, 8192])
        try space.release(16384, 8192)
        #expect(space.freedBytes == 8192 && space.freeBytes == 61440)
        #expect(try freeRuns() == [[0, 4096], [24576, 57344]], "freed is not free")
        let freed = try space.freedRuns()
        #expect(freed.map { [$0.start, $0.length] } == [[16384, 8192]])
        #expect(try space.reclaim(freed[0]))
        #expect(try !space.reclaim(freed[0]), "a run is reclaimed once")
        #expect(try freeRuns() == [[0, 4096], [16384, 65536]], "merged with the run after it, not the one before")
        #expect(space.freedBytes == 0 && space.freeBytes == 69632)
        try space.load()
        #expect(space.freedBytes == 0 && space.freeBytes == 69632, "the counters match the tables")
    }
}
