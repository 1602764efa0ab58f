/// Field access on raw structure bytes. Reads of file data throw instead of trapping, because offsets
/// inside a structure can come from the file itself.
struct FieldOutOfBounds: Error {}

extension Array where Element == UInt8 {
    func littleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) throws -> T {
        guard offset >= 0, offset <= count - MemoryLayout<T>.size else { throw FieldOutOfBounds() }
        var value: T = 0
        for index in (0..<MemoryLayout<T>.size).reversed() {
            value = (value << 8) | T(self[offset + index])
        }
        return value
    }

    func bigEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) throws -> T {
        guard offset >= 0, offset <= count - MemoryLayout<T>.size else { throw FieldOutOfBounds() }
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value = (value << 8) | T(self[offset + index])
        }
        return value
    }

    func bytes(at offset: Int, count length: Int) throws -> [UInt8] {
        // Compared by subtraction: offsets come from the file and `offset + length` could overflow.
        guard offset >= 0, length >= 0, offset <= count, length <= count - offset else { throw FieldOutOfBounds() }
        return Array(self[offset..<(offset + length)])
    }

    func ascii(at offset: Int, count length: Int) -> String {
        guard let raw = try? bytes(at: offset, count: length) else { return "" }
        return String(decoding: raw.map { (32...126).contains($0) ? $0 : UInt8(ascii: " ") }, as: UTF8.self)
    }

    /// Writers fill structures we lay out ourselves, so their offsets are constants of the format.
    mutating func putLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    mutating func putBigEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let size = MemoryLayout<T>.size
        for index in 0..<size {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * (size - 1 - index)))
        }
    }

    mutating func putBytes(_ bytes: [UInt8], at offset: Int) {
        replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }
}

/// UTF-16 text as the formats store it: VHD parent names big-endian, everything else little-endian.
enum UTF16Text {
    static func decode(_ bytes: [UInt8], bigEndian: Bool) -> String {
        var units: [UInt16] = []
        units.reserveCapacity(bytes.count / 2)
        var index = 0
        while index + 1 < bytes.count {
            let unit = bigEndian
                ? UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
                : UInt16(bytes[index + 1]) << 8 | UInt16(bytes[index])
            if unit == 0 { break }
            units.append(unit)
            index += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    static func encode(_ text: String, bigEndian: Bool) -> [UInt8] {
        text.utf16.flatMap { unit -> [UInt8] in
            let high = UInt8(unit >> 8), low = UInt8(unit & 0xFF)
            return bigEndian ? [high, low] : [low, high]
        }
    }
}

extension FixedWidthInteger {
    func roundedUp(toMultipleOf alignment: Self) -> Self {
        (self + alignment - 1) / alignment * alignment
    }
}
