@testable import CSVFS
import TestSupport
import Testing

/// The extent map's edits against a byte-per-block model: every edit must leave the map equal to the model,
/// sorted, non-overlapping, merged, and report exactly the rows it changed.
struct ExtentMapTests {
    /// What each logical block maps to: nil (hole) or (physical block, unwritten).
    typealias Model = [Int64: (physical: Int64, unwritten: Bool)]
    static let block: Int64 = 4096

    static func model(of map: ExtentMap) -> Model {
        var model: Model = [:]
        for extent in map.extents {
            for index in 0..<(extent.length / block) {
                model[extent.logical / block + index] = (extent.physical / block + index, extent.unwritten)
            }
        }
        return model
    }

    static func checkShape(_ map: ExtentMap) {
        for (previous, next) in zip(map.extents, map.extents.dropFirst()) {
            #expect(previous.logicalEnd <= next.logical, "overlap or disorder: \(previous) \(next)")
            let mergeable = previous.logicalEnd == next.logical && previous.physicalEnd == next.physical
                && previous.unwritten == next.unwritten
            #expect(!mergeable, "unmerged neighbours: \(previous) \(next)")
        }
        #expect(map.extents.allSatisfy { $0.length > 0 })
    }

    @Test func segmentsCoverHolesAndExtents() {
        let map = ExtentMap([
            Extent(logical: 4096, physical: 40960, length: 8192, unwritten: false),
            Extent(logical: 16384, physical: 8192, length: 4096, unwritten: true),
        ])
        let segments = map.segments(in: 0..<24576)
        #expect(segments.map(\.logical) == [0, 4096, 12288, 16384, 20480])
        #expect(segments.map(\.length) == [4096, 8192, 4096, 4096, 4096])
        #expect(segments.map(\.physical) == [nil, 40960, nil, 8192, nil])
        #expect(segments.map(\.unwritten) == [false, false, false, true, false])
        // A range starting inside an extent maps into its middle.
        #expect(map.segments(in: 5000..<6000) == [FileSegment(logical: 5000, length: 1000, physical: 41864, unwritten: false)])
    }

    @Test(arguments: [1, 2, 3, 42, 1234])
    func randomEditsMatchTheModel(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        var map = ExtentMap([])
        var nextPhysical: Int64 = 1000
        for _ in 0..<400 {
            let start = Int64(random.next() % 64), length = Int64(random.next() % 16 + 1)
            let range = (start * Self.block)..<((start + length) * Self.block)
            var expected = Self.model(of: map)
            let before = Set(map.extents)
            let change: ExtentMap.Change
            switch random.next() % 3 {
            case 0:
                // Fill the holes of the range, as allocation does.
                let holes = map.segments(in: range).filter { $0.physical == nil }
                var new: [Extent] = []
                for hole in holes {
                    new.append(Extent(logical: hole.logical, physical: nextPhysical * Self.block, length: hole.length, unwritten: true))
                    for index in 0..<(hole.length / Self.block) {
                        expected[hole.logical / Self.block + index] = (nextPhysical + index, true)
                    }
                    nextPhysical += hole.length / Self.block + Int64(random.next() % 2)
                }
                change = map.insert(new)
            case 1:
                let unwritten = random.next() % 2 == 0
                for index in start..<(start + length) where expected[index] != nil { expected[index]!.unwritten = unwritten }
                change = map.setState(range, unwritten: unwritten)
            default:
                let (removed, freed) = map.remove(range)
                var freedBlocks: Set<Int64> = []
                for piece in freed { for index in 0..<(piece.length / Self.block) { freedBlocks.insert(piece.physical / Self.block + index) } }
                var expectedFreed: Set<Int64> = []
                for index in start..<(start + length) {
                    if let mapped = expected.removeValue(forKey: index) { expectedFreed.insert(mapped.physical) }
                }
                #expect(freedBlocks == expectedFreed)
                change = removed
            }
            let actual = Self.model(of: map)
            #expect(actual.count == expected.count)
            for (index, value) in expected {
                #expect(actual[index]?.physical == value.physical && actual[index]?.unwritten == value.unwritten,
                        "block \(index), seed \(seed)")
            }
            Self.checkShape(map)
            // The reported change turns the old rows into the new ones.
            let after = before.subtracting(change.removed).union(change.added)
            #expect(after == Set(map.extents), "change rows, seed \(seed)")
        }
    }
}
