/// A run of a file's bytes stored contiguously on the LUN. Offsets and lengths are multiples of the block size.
public struct Extent: Sendable, Equatable, Hashable {
    public var logical: Int64
    public var physical: Int64
    public var length: Int64
    public var unwritten: Bool

    public var logicalEnd: Int64 { logical + length }
    public var physicalEnd: Int64 { physical + length }
}

/// A file's extents, sorted by logical offset and never overlapping. A value type: every edit returns the rows
/// it removed and added, so the store writes only what changed.
struct ExtentMap: Sendable {
    private(set) var extents: [Extent]

    init(_ extents: [Extent]) { self.extents = extents.sorted { $0.logical < $1.logical } }

    struct Change {
        var removed: [Extent] = []
        var added: [Extent] = []
    }

    /// Index of the first extent that ends after `offset`.
    func firstIndex(endingAfter offset: Int64) -> Int {
        var low = 0, high = extents.count
        while low < high {
            let mid = (low + high) / 2
            if extents[mid].logicalEnd <= offset { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The segments covering `range`, holes included, in order.
    func segments(in range: Range<Int64>) -> [FileSegment] {
        var result: [FileSegment] = []
        var position = range.lowerBound
        var index = firstIndex(endingAfter: position)
        while position < range.upperBound {
            if index < extents.count, extents[index].logical <= position {
                let extent = extents[index]
                let end = min(extent.logicalEnd, range.upperBound)
                result.append(FileSegment(logical: position, length: end - position,
                                          physical: extent.physical + (position - extent.logical), unwritten: extent.unwritten))
                position = end
                index += 1
            } else {
                let end = index < extents.count ? min(extents[index].logical, range.upperBound) : range.upperBound
                result.append(FileSegment(logical: position, length: end - position, physical: nil, unwritten: false))
                position = end
            }
        }
        return result
    }

    var allocatedBytes: Int64 { extents.reduce(0) { $0 + $1.length } }

    /// Rewrites the extents touching `range` (and its immediate neighbours, so merges can happen).
    private mutating func edit(_ range: Range<Int64>, _ transform: (inout [Extent]) -> Void) -> Change {
        var low = firstIndex(endingAfter: range.lowerBound)
        if low > 0, extents[low - 1].logicalEnd == range.lowerBound { low -= 1 }
        var high = low
        while high < extents.count, extents[high].logical <= range.upperBound { high += 1 }
        let old = Array(extents[low..<high])
        var window = old
        transform(&window)
        window.sort { $0.logical < $1.logical }
        window = Self.merged(window)
        extents.replaceSubrange(low..<high, with: window)
        let oldSet = Set(old), newSet = Set(window)
        return Change(removed: old.filter { !newSet.contains($0) }, added: window.filter { !oldSet.contains($0) })
    }

    /// Removes `range` from the file; returns the freed LUN pieces with the row changes.
    mutating func remove(_ range: Range<Int64>) -> (Change, freed: [(physical: Int64, length: Int64)]) {
        var freed: [(Int64, Int64)] = []
        let change = edit(range) { window in
            window = window.flatMap { extent -> [Extent] in
                let start = max(extent.logical, range.lowerBound), end = min(extent.logicalEnd, range.upperBound)
                guard start < end else { return [extent] }
                freed.append((extent.physical + (start - extent.logical), end - start))
                var kept: [Extent] = []
                if extent.logical < start {
                    kept.append(Extent(logical: extent.logical, physical: extent.physical,
                                       length: start - extent.logical, unwritten: extent.unwritten))
                }
                if end < extent.logicalEnd {
                    kept.append(Extent(logical: end, physical: extent.physical + (end - extent.logical),
                                       length: extent.logicalEnd - end, unwritten: extent.unwritten))
                }
                return kept
            }
        }
        return (change, freed.map { (physical: $0.0, length: $0.1) })
    }

    /// Adds extents over what must be holes.
    mutating func insert(_ new: [Extent]) -> Change {
        guard let first = new.map(\.logical).min(), let last = new.map(\.logicalEnd).max() else { return Change() }
        return edit(first..<last) { $0.append(contentsOf: new) }
    }

    /// Marks the allocated parts of `range` written or unwritten.
    mutating func setState(_ range: Range<Int64>, unwritten: Bool) -> Change {
        edit(range) { window in
            window = window.flatMap { extent -> [Extent] in
                let start = max(extent.logical, range.lowerBound), end = min(extent.logicalEnd, range.upperBound)
                guard start < end, extent.unwritten != unwritten else { return [extent] }
                var pieces: [Extent] = []
                if extent.logical < start {
                    pieces.append(Extent(logical: extent.logical, physical: extent.physical,
                                         length: start - extent.logical, unwritten: extent.unwritten))
                }
                pieces.append(Extent(logical: start, physical: extent.physical + (start - extent.logical),
                                     length: end - start, unwritten: unwritten))
                if end < extent.logicalEnd {
                    pieces.append(Extent(logical: end, physical: extent.physical + (end - extent.logical),
                                         length: extent.logicalEnd - end, unwritten: extent.unwritten))
                }
                return pieces
            }
        }
    }

    static func merged(_ sorted: [Extent]) -> [Extent] {
        var result: [Extent] = []
        result.reserveCapacity(sorted.count)
        for extent in sorted {
            if var last = result.last, last.logicalEnd == extent.logical, last.physicalEnd == extent.physical,
               last.unwritten == extent.unwritten {
                last.length += extent.length
                result[result.count - 1] = last
            } else {
                result.append(extent)
            }
        }
        return result
    }
}
