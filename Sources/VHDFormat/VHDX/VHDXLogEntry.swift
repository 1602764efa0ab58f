/// One log entry: a 64-byte header and descriptors in the first sectors, then one 4 KiB data sector
/// per data descriptor. Shared by replay (parsing) and the writer (encoding).
struct VHDXLogEntry {
    static let sectorSize = 4096
    static let signature = Array("loge".utf8)

    enum Descriptor: Equatable {
        /// A full 4 KiB page: 8 leading bytes, 4084 from the data sector, 4 trailing bytes.
        case data(fileOffset: UInt64, page: [UInt8])
        case zero(fileOffset: UInt64, length: UInt64)
    }

    var sequenceNumber: UInt64
    var tail: UInt32
    var logGuid: GUID
    var flushedFileOffset: UInt64
    var lastFileOffset: UInt64
    var descriptors: [Descriptor]

    init(sequenceNumber: UInt64, tail: UInt32, logGuid: GUID, flushedFileOffset: UInt64, lastFileOffset: UInt64,
         descriptors: [Descriptor]) {
        self.sequenceNumber = sequenceNumber
        self.tail = tail
        self.logGuid = logGuid
        self.flushedFileOffset = flushedFileOffset
        self.lastFileOffset = lastFileOffset
        self.descriptors = descriptors
    }

    static func descriptorSectors(count: Int) -> Int { (64 + 32 * count + sectorSize - 1) / sectorSize }

    var encodedLength: Int {
        let dataCount = descriptors.filter { if case .data = $0 { true } else { false } }.count
        return (Self.descriptorSectors(count: descriptors.count) + dataCount) * Self.sectorSize
    }

    func encoded() -> [UInt8] {
        let descriptorArea = Self.descriptorSectors(count: descriptors.count) * Self.sectorSize
        var bytes = [UInt8](repeating: 0, count: encodedLength)
        bytes.putBytes(Self.signature, at: 0)
        bytes.putLittleEndian(UInt32(bytes.count), at: 8)
        bytes.putLittleEndian(tail, at: 12)
        bytes.putLittleEndian(sequenceNumber, at: 16)
        bytes.putLittleEndian(UInt32(descriptors.count), at: 24)
        bytes.putBytes(logGuid.bytes, at: 32)
        bytes.putLittleEndian(flushedFileOffset, at: 48)
        bytes.putLittleEndian(lastFileOffset, at: 56)
        var dataSector = descriptorArea
        for (index, descriptor) in descriptors.enumerated() {
            let base = 64 + index * 32
            switch descriptor {
            case let .zero(fileOffset, length):
                bytes.putBytes(Array("zero".utf8), at: base)
                bytes.putLittleEndian(length, at: base + 8)
                bytes.putLittleEndian(fileOffset, at: base + 16)
            case let .data(fileOffset, page):
                bytes.putBytes(Array("desc".utf8), at: base)
                bytes.putBytes(Array(page[4092..<4096]), at: base + 4)
                bytes.putBytes(Array(page[0..<8]), at: base + 8)
                bytes.putLittleEndian(fileOffset, at: base + 16)
                bytes.putBytes(Array("data".utf8), at: dataSector)
                bytes.putLittleEndian(UInt32(sequenceNumber >> 32), at: dataSector + 4)
                bytes.putBytes(Array(page[8..<4092]), at: dataSector + 8)
                bytes.putLittleEndian(UInt32(truncatingIfNeeded: sequenceNumber), at: dataSector + 4092)
                dataSector += Self.sectorSize
            }
            bytes.putLittleEndian(sequenceNumber, at: base + 24)
        }
        bytes.putLittleEndian(CRC32C.checksum(bytes, zeroingFieldAt: 4), at: 4)
        return bytes
    }

    /// The entry length claimed by a header, or nil when the bytes are not an entry header of this log.
    static func peekLength(_ header: [UInt8], logGuid: GUID, logLength: Int) -> Int? {
        guard header.count >= 64, Array(header[0..<4]) == signature,
              GUID(bytes: Array(header[32..<48])) == logGuid,
              let length = try? header.littleEndian(UInt32.self, at: 8),
              length > 0, length % UInt32(sectorSize) == 0, Int(length) <= logLength else { return nil }
        return Int(length)
    }

    /// Parses a whole entry; nil for anything torn or inconsistent (which replay simply ignores).
    init?(parsing bytes: [UInt8], logGuid: GUID) {
        guard bytes.count >= Self.sectorSize, Array(bytes[0..<4]) == Self.signature,
              let checksum = try? bytes.littleEndian(UInt32.self, at: 4),
              let length = try? bytes.littleEndian(UInt32.self, at: 8), Int(length) == bytes.count,
              checksum == CRC32C.checksum(bytes, zeroingFieldAt: 4),
              let tail = try? bytes.littleEndian(UInt32.self, at: 12),
              let sequence = try? bytes.littleEndian(UInt64.self, at: 16), sequence > 0,
              let count = try? bytes.littleEndian(UInt32.self, at: 24),
              GUID(bytes: Array(bytes[32..<48])) == logGuid,
              let flushed = try? bytes.littleEndian(UInt64.self, at: 48),
              let last = try? bytes.littleEndian(UInt64.self, at: 56),
              count <= UInt32(bytes.count / 32) else { return nil }
        self.sequenceNumber = sequence
        self.tail = tail
        self.logGuid = logGuid
        self.flushedFileOffset = flushed
        self.lastFileOffset = last
        var descriptors: [Descriptor] = []
        var dataSector = Self.descriptorSectors(count: Int(count)) * Self.sectorSize
        for index in 0..<Int(count) {
            let base = 64 + index * 32
            guard let kind = try? bytes.bytes(at: base, count: 4),
                  let fileOffset = try? bytes.littleEndian(UInt64.self, at: base + 16),
                  let descriptorSequence = try? bytes.littleEndian(UInt64.self, at: base + 24),
                  descriptorSequence == sequence, fileOffset % UInt64(Self.sectorSize) == 0 else { return nil }
            if kind == Array("zero".utf8) {
                guard let length = try? bytes.littleEndian(UInt64.self, at: base + 8),
                      length % UInt64(Self.sectorSize) == 0 else { return nil }
                descriptors.append(.zero(fileOffset: fileOffset, length: length))
            } else if kind == Array("desc".utf8) {
                guard dataSector + Self.sectorSize <= bytes.count,
                      Array(bytes[dataSector..<dataSector + 4]) == Array("data".utf8),
                      let high = try? bytes.littleEndian(UInt32.self, at: dataSector + 4),
                      let low = try? bytes.littleEndian(UInt32.self, at: dataSector + 4092),
                      UInt64(high) << 32 | UInt64(low) == sequence else { return nil }
                let page = Array(bytes[base + 8..<base + 16]) + Array(bytes[dataSector + 8..<dataSector + 4092])
                    + Array(bytes[base + 4..<base + 8])
                descriptors.append(.data(fileOffset: fileOffset, page: page))
                dataSector += Self.sectorSize
            } else {
                return nil
            }
        }
        guard dataSector == bytes.count else { return nil }
        self.descriptors = descriptors
    }
}
