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

    /// Returns one message per bad entry, with the indices of the entries found bad.
    func problems(of placements: [Placement], tableName: String) -> [(index: Int, message: String)] {
        var found: [(index: Int, message: String)] = []
        var inRange: [Placement] = []
        for placement in placements {
            let (end, overflow) = placement.start.addingReportingOverflow(placement.length)
            if overflow || end > fileSize {
                found.append((placement.index, "\(tableName) entry \(placement.index) points to \(placement.start)..<\(overflow ? UInt64.max : end), past the end of the file (\(fileSize) bytes)"))
                continue
            }
            if let clash = reserved.first(where: { $0.range.overlaps(placement.start..<end) }) {
                found.append((placement.index, "\(tableName) entry \(placement.index) at \(placement.start) overlaps the \(clash.name)"))
                continue
            }
            inRange.append(placement)
        }
        inRange.sort { $0.start < $1.start }
        for (previous, next) in zip(inRange, inRange.dropFirst()) where previous.start + previous.length > next.start {
            found.append((next.index, "\(tableName) entries \(previous.index) and \(next.index) overlap at file offset \(next.start)"))
        }
        return found
    }
}
