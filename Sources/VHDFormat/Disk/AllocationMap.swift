/// A range of the flattened disk and where its bytes come from, as `vhdtool map` lists them.
public struct MappedRange: Sendable, Codable, Equatable {
    public var offset: UInt64
    public var length: UInt64
    /// true when an image holds the bytes; false when they read as zeros.
    public var allocated: Bool
    /// The image holding the bytes (0 is the opened one), nil for zeros.
    public var depth: Int?
    public var file: String?
}

extension VirtualDisk {
    /// The flattened disk as ranges, neighbours with the same source merged.
    public func allocationMap() throws -> [MappedRange] {
        var ranges: [MappedRange] = []
        try forEachRange(maximumLength: UInt64.max) { offset, length, source in
            let depth: Int? = if case let .data(depth, _) = source { depth } else { nil }
            if var last = ranges.last, last.depth == depth, last.offset + last.length == offset {
                last.length += length
                ranges[ranges.count - 1] = last
            } else {
                ranges.append(MappedRange(offset: offset, length: length, allocated: depth != nil, depth: depth,
                                          file: depth.map { layers[$0].file.path }))
            }
        }
        return ranges
    }

    /// Walks the whole disk in source order; data ranges are cut to `maximumLength` for buffered copies.
    public func forEachRange(maximumLength: UInt64, _ body: (UInt64, UInt64, Source) throws -> Void) throws {
        var offset: UInt64 = 0
        while offset < virtualSize {
            let (length, source) = try resolve(at: offset, limit: maximumLength)
            try body(offset, length, source)
            offset += length
        }
    }

    /// Walks the ranges that hold data, cut to `maximumLength`: allocated ranges minus the holes of the
    /// image files (a block allocated by extending the file reads zeros where nothing was written).
    public func forEachDataRange(maximumLength: UInt64, _ body: (UInt64, UInt64) throws -> Void) throws {
        try forEachRange(maximumLength: maximumLength) { offset, length, source in
            guard case let .data(depth, fileOffset) = source else { return }
            for run in layers[depth].file.dataRuns(at: fileOffset, length: length) {
                try body(offset + (run.offset - fileOffset), run.length)
            }
        }
    }

    /// Bytes the chain holds (not zeros), for progress reports and facts.
    public func allocatedByteCount() throws -> UInt64 {
        try allocationMap().filter(\.allocated).reduce(0) { $0 + $1.length }
    }
}
