import Foundation

enum ZeroTest {
    /// Whether a buffer holds only zeros; compares the buffer with itself shifted by one byte so the
    /// work happens in the C library's vectorized memcmp instead of a Swift byte loop.
    static func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return true }
        guard base.load(as: UInt8.self) == 0 else { return false }
        return memcmp(base, base + 1, buffer.count - 1) == 0
    }
}
