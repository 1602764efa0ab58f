import Glibc

/// The log `LUNWriteRecorder` keeps of what a process sent to its LUN, and its one reader (the crash-cut test
/// builds from it every image a power cut could leave).
///
/// The file starts with the 8 bytes `CSVFSLW1`; then records, in the order their calls returned, each a
/// 13-byte head (kind: u8; a: u64 little-endian; b: u32 little-endian) and, for a write, `b` bytes:
/// kind 1, a write that completed: `a` its LUN offset, `b` its length, then the bytes written;
/// kind 2, a flush about to start: `a` its id, `b` 0;
/// kind 3, that flush returned: `a` its id, `b` 0 if it succeeded, else its errno.
/// A flush makes durable the writes recorded before its start, and no others: a write that completes while
/// a flush runs may have reached the device's cache after the flush passed.
public enum LUNWriteLog {
    public static let magic: [UInt8] = Array("CSVFSLW1".utf8)
    static let headSize = 13

    public enum Record: Equatable, Sendable {
        case write(offset: Int64, bytes: [UInt8])
        case flushStarted(id: UInt64)
        case flushEnded(id: UInt64, errno: Int32)
    }

    /// A record and where it ends in the log file: a test notes the log's size when a call of its own returns,
    /// and every record ending at or before that size happened before.
    public struct Entry: Equatable, Sendable {
        public let record: Record
        public let end: Int64
    }

    public struct FormatError: Error, CustomStringConvertible {
        public let description: String
    }

    static func encodeHead(kind: UInt8, _ a: UInt64, _ b: UInt32) -> [UInt8] {
        var head = [kind]
        head.reserveCapacity(headSize)
        withUnsafeBytes(of: a.littleEndian) { head.append(contentsOf: $0) }
        withUnsafeBytes(of: b.littleEndian) { head.append(contentsOf: $0) }
        return head
    }

    /// Every record of the log at `path`; a log cut short inside a record, or anything else that is not a
    /// log, is refused with where and why.
    public static func read(path: String) throws(FormatError) -> [Entry] {
        let bytes = try contents(of: path)
        guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else {
            throw FormatError(description: "\(path) is not a LUN write log (it does not start with CSVFSLW1)")
        }
        var entries: [Entry] = []
        var cursor = magic.count
        func integer(at start: Int, count: Int) -> UInt64 {
            (0..<count).reduce(UInt64(0)) { $0 | UInt64(bytes[start + $1]) << (8 * UInt64($1)) }
        }
        while cursor < bytes.count {
            guard bytes.count - cursor >= headSize else {
                throw FormatError(description: "\(path): the record at byte \(cursor) is cut short (\(bytes.count - cursor) of its \(headSize)-byte head)")
            }
            let kind = bytes[cursor]
            let a = integer(at: cursor + 1, count: 8)
            let b = UInt32(integer(at: cursor + 9, count: 4))
            let body = cursor + headSize
            let record: Record
            var end = body
            switch kind {
            case 1:
                guard bytes.count - body >= Int(b) else {
                    throw FormatError(description: "\(path): the write at byte \(cursor) is cut short (\(bytes.count - body) of its \(b) bytes)")
                }
                guard a <= UInt64(Int64.max) else { throw FormatError(description: "\(path): the write at byte \(cursor) has offset \(a)") }
                end += Int(b)
                record = .write(offset: Int64(a), bytes: Array(bytes[body..<end]))
            case 2:
                record = .flushStarted(id: a)
            case 3:
                record = .flushEnded(id: a, errno: Int32(bitPattern: b))
            default:
                throw FormatError(description: "\(path): the record at byte \(cursor) has unknown kind \(kind)")
            }
            entries.append(Entry(record: record, end: Int64(end)))
            cursor = end
        }
        return entries
    }

    private static func contents(of path: String) throws(FormatError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw FormatError(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<n])
        }
    }
}
