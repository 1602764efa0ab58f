import Glibc

/// Reads a message from untrusted bytes, little-endian. Every read is bounds-checked and anything short,
/// too long or out of range throws EPROTO, so a malformed message is an error and never a trap or a huge
/// allocation.
struct WireReader {
    private let message: [UInt8]
    private var offset = 0

    init(_ message: [UInt8]) { self.message = message }

    var remaining: Int { message.count - offset }

    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) throws(Errno) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .protocolError }
        let value = message.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return T(littleEndian: value)
    }

    mutating func bool() throws(Errno) -> Bool {
        switch try integer(UInt8.self) {
        case 0: return false
        case 1: return true
        default: throw .protocolError
        }
    }

    /// A non-negative 64-bit quantity (a size, an offset) that must fit `Int64`.
    mutating func nonNegative() throws(Errno) -> Int64 {
        let value = try integer(Int64.self)
        guard value >= 0 else { throw .protocolError }
        return value
    }

    /// The count of a list whose elements take at least `minimumSize` bytes each: a count the rest of the
    /// message cannot hold is malformed, so no claimed count reserves more than the message brings.
    mutating func count(minimumSize: Int) throws(Errno) -> Int {
        let count = Int(try integer(UInt32.self))
        guard count <= remaining / max(minimumSize, 1) else { throw .protocolError }
        return count
    }

    mutating func bytes() throws(Errno) -> [UInt8] {
        let count = try count(minimumSize: 1)
        defer { offset += count }
        return Array(message[offset..<(offset + count)])
    }

    mutating func range() throws(Errno) -> Range<Int64> {
        let lower = try integer(Int64.self)
        let upper = try integer(Int64.self)
        guard lower <= upper else { throw .protocolError }
        return lower..<upper
    }

    /// Bytes left over after the last field mean the sender and we disagree about the message.
    func finish() throws(Errno) {
        guard remaining == 0 else { throw .protocolError }
    }
}

extension Errno {
    /// A message that does not decode.
    public static let protocolError = Errno(EPROTO)
    public static let timedOut = Errno(ETIMEDOUT)
}
