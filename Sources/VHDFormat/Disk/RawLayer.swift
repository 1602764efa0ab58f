/// A raw disk file: every byte is data.
final class RawLayer: ImageLayer {
    var inPlaceWritesAllowed: Bool { file.writable }
    let file: ImageFile
    let virtualSize: UInt64
    let sectorSize: UInt64 = 512

    init(file: ImageFile) throws {
        self.file = file
        virtualSize = try file.size()
    }

    var facts: DiskFacts {
        DiskFacts(path: file.path, format: .raw, type: .fixed, virtualSize: virtualSize, blockSize: 0,
                  logicalSectorSize: 512, physicalSectorSize: 512, creator: "", identity: "", fileWriteIdentifier: nil,
                  diskIdentifier: nil, geometry: nil, fileSize: virtualSize, parent: nil, logReplayed: false)
    }

    func extent(at offset: UInt64, limit: UInt64) throws -> Extent {
        Extent(length: min(limit, virtualSize - offset), source: .data(fileOffset: offset))
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, lower: LowerReader) throws {
        try file.write(at: offset, from: buffer)
    }

    func flush() throws { if file.writable { try file.sync() } }
    func close() throws { try flush() }
}
