#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The fuzzer's input format, a *sparse image*: a little-endian u64 file size (taken modulo
/// `maximumFileSize`), then chunks of (u64 offset, u32 length, bytes). A 4 MiB VHDX is a few KiB this
/// way, so seeds stay small and mutations land on structures rather than on zero padding.
public enum SparseImage {
    public static let maximumFileSize: UInt64 = 64 << 20

    private static func readLittleEndian<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], _ offset: inout Int) -> T? {
        guard bytes.count - offset >= MemoryLayout<T>.size else { return nil }
        var value: T = 0
        for index in (0..<MemoryLayout<T>.size).reversed() { value = value << 8 | T(bytes[offset + index]) }
        offset += MemoryLayout<T>.size
        return value
    }

    /// Writes the image `input` describes to `path` (replacing it); false when the input is too short to
    /// hold a size or the file cannot be written.
    public static func materialize(_ input: [UInt8], at path: String) -> Bool {
        var cursor = 0
        guard let claimed = readLittleEndian(UInt64.self, input, &cursor) else { return false }
        let size = claimed % maximumFileSize
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { return false }
        while let offset = readLittleEndian(UInt64.self, input, &cursor), let length = readLittleEndian(UInt32.self, input, &cursor) {
            let count = min(Int(length), input.count - cursor)
            guard offset < size, count > 0 else { break }
            let clipped = min(count, Int(size - offset))
            let written = input.withUnsafeBytes { pwrite(fd, $0.baseAddress! + cursor, clipped, off_t(offset)) }
            guard written == clipped else { return false }
            cursor += count
        }
        return true
    }
}
