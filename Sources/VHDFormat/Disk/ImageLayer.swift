/// Where the bytes of a virtual range come from in one image.
enum ExtentSource: Equatable {
    case data(fileOffset: UInt64)
    case zero
    case parent
}

struct Extent: Equatable {
    var length: UInt64
    var source: ExtentSource
}

/// Reads the view below a layer (its parent chain), used for copy-on-write of whole blocks.
typealias LowerReader = (_ offset: UInt64, _ buffer: UnsafeMutableRawBufferPointer) throws -> Void

/// One image file of a chain: maps virtual offsets to its own file, zeros, or its parent.
protocol ImageLayer: AnyObject {
    var file: ImageFile { get }
    var facts: DiskFacts { get }
    var virtualSize: UInt64 { get }
    /// The unit a write must cover whole: the logical sector size (4 KiB for a differencing VHD).
    var sectorSize: UInt64 { get }

    /// Whether data this image already holds may be overwritten in its file directly, with no change to
    /// any structure (a VHDX first needs its write session, which gives it new write GUIDs).
    var inPlaceWritesAllowed: Bool { get }

    /// The mapping at `offset`, covering at most `limit` bytes (never 0 for offset < virtualSize).
    func extent(at offset: UInt64, limit: UInt64) throws -> Extent
    /// Writes sector-aligned data. `lower` gives the parent's view for copy-on-write.
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, lower: LowerReader) throws
    /// Makes everything written so far durable and the file consistent.
    func flush() throws
    /// Flushes and finishes the write session (a VHDX clears its log).
    func close() throws
}
