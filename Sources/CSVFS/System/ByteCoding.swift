/// Little-endian encoding of on-disk structures.
struct ByteWriter {
    private(set) var bytes: [UInt8]

    init(capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func append(_ raw: [UInt8]) { bytes.append(contentsOf: raw) }
    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func pad(to count: Int) {
        if bytes.count < count { bytes.append(contentsOf: repeatElement(0, count: count - bytes.count)) }
    }
}

/// Little-endian decoding with bounds checks: a short buffer reads as zeros, never traps.
struct ByteReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func integer<T: FixedWidthInteger>(at offset: Int, as: T.Type) -> T {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset + size <= bytes.count else { return 0 }
        var value: T = 0
        for index in 0..<size { value |= T(bytes[offset + index]) << (8 * index) }
        return value
    }

    func uint32(at offset: Int) -> UInt32 { integer(at: offset, as: UInt32.self) }
    func uint64(at offset: Int) -> UInt64 { integer(at: offset, as: UInt64.self) }
    func slice(_ offset: Int, _ count: Int) -> [UInt8] {
        guard offset >= 0, offset + count <= bytes.count else { return [] }
        return Array(bytes[offset..<(offset + count)])
    }
}
