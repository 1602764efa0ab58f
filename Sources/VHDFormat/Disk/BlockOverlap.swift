/// Finds blocks of an allocation table that leave the file or overlap each other or the metadata,
/// the two ways a corrupt table makes writes destroy data.
struct BlockPlacementChecker {
    struct Placement {
        var index: Int
        var start: UInt64
        var length: UInt64
    }

    /// Ranges of the file that hold metadata (headers, tables) and must not hold blocks.
    var reserved: [(name: String, range: Range<UInt64>)]
    var fileSize: UInt64

    /// Adds each entry that leaves the file, overlaps the metadata or overlaps another entry to `bad`.
    func check(_ placements: [Placement], tableName: String, into bad: inout BadTableEntries) {
        var inRange: [Placement] = []
        for placement in placements {
            let (end, overflow) = placement.start.addingReportingOverflow(placement.length)
            if overflow || end > fileSize {
                bad.add(placement.index, "\(tableName) entry \(placement.index) points to \(placement.start)..<\(overflow ? UInt64.max : end), past the end of the file (\(fileSize) bytes)")
                continue
            }
            if let clash = reserved.first(where: { $0.range.overlaps(placement.start..<end) }) {
                bad.add(placement.index, "\(tableName) entry \(placement.index) at \(placement.start) overlaps the \(clash.name)")
                continue
            }
            inRange.append(placement)
        }
        inRange.sort { $0.start < $1.start }
        for (previous, next) in zip(inRange, inRange.dropFirst()) where previous.start + previous.length > next.start {
            bad.add(next.index, "\(tableName) entries \(previous.index) and \(next.index) overlap at file offset \(next.start)")
        }
    }
}

/// The bad entries of an allocation table. A damaged table can have millions: membership is a set (a
/// list made opening quadratic), and only the first `messageLimit` problems get a message, the rest a count.
struct BadTableEntries {
    static let messageLimit = 100

    let tableName: String
    private(set) var indices = Set<Int>()
    private var messages: [String] = []
    private var unnamed = 0

    init(tableName: String) { self.tableName = tableName }

    mutating func add(_ index: Int, _ message: @autoclosure () -> String) {
        indices.insert(index)
        if messages.count < Self.messageLimit { messages.append(message()) } else { unnamed += 1 }
    }

    func contains(_ index: Int) -> Bool { indices.contains(index) }
    var first: String? { messages.first }
    var allMessages: [String] { unnamed == 0 ? messages : messages + ["\(unnamed) more problems in the \(tableName)"] }
}
