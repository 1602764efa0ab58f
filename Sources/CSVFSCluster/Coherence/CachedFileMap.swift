import CSVFS

/// The parts of a file's extent map a node has read from the coordinator: the size, and the segments of
/// some windows of the file (each a contiguous run of segments, holes included, as `mapping` answers).
/// Valid only under the inode's licence, like the rest of `NodeMetadataCache`.
struct CachedFileMap {
    /// A read asks the coordinator for the whole window around it, so the reads after it find their segments here.
    static let window: Int64 = 128 << 20
    /// Windows kept per file; the oldest goes first.
    static let maxWindows = 64

    let size: UInt64
    private var windows: [(range: Range<Int64>, segments: [FileSegment])] = []

    init(size: UInt64) { self.size = size }

    /// The window to read for a request of `range`: the aligned windows it touches, or just `range` when
    /// that is huge (a seek's "to the end").
    static func window(around range: Range<Int64>) -> Range<Int64> {
        guard range.upperBound <= Int64.max - window, range.count <= window else { return range }
        let start = range.lowerBound / window * window
        let end = (range.upperBound + window - 1) / window * window
        return start..<max(end, start + window)
    }

    mutating func add(_ range: Range<Int64>, _ segments: [FileSegment]) {
        windows.removeAll { range.lowerBound <= $0.range.lowerBound && $0.range.upperBound <= range.upperBound }
        if windows.count >= Self.maxWindows { windows.removeFirst() }
        windows.append((range, segments))
    }

    /// The segments covering `range`, cut to it; nil when no window holds all of it.
    func segments(in range: Range<Int64>) -> [FileSegment]? {
        guard let window = windows.last(where: { $0.range.lowerBound <= range.lowerBound && range.upperBound <= $0.range.upperBound })
        else { return nil }
        return Self.cut(window.segments, to: range)
    }

    /// `segments` (sorted, contiguous) cut to `range`, which they cover.
    static func cut(_ segments: [FileSegment], to range: Range<Int64>) -> [FileSegment] {
        guard !range.isEmpty else { return [] }
        // The first segment ending after the range's start.
        var low = 0, high = segments.count
        while low < high {
            let mid = (low + high) / 2
            if segments[mid].logical + segments[mid].length <= range.lowerBound { low = mid + 1 } else { high = mid }
        }
        var result: [FileSegment] = []
        var index = low
        while index < segments.count, segments[index].logical < range.upperBound {
            var segment = segments[index]
            let start = max(segment.logical, range.lowerBound)
            let end = min(segment.logical + segment.length, range.upperBound)
            if let physical = segment.physical { segment.physical = physical + (start - segment.logical) }
            segment.logical = start
            segment.length = end - start
            result.append(segment)
            index += 1
        }
        return result
    }
}
