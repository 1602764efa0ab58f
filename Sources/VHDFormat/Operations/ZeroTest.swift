import Foundation

enum ZeroTest {
    /// Whether a buffer holds only zeros; compares the buffer with itself shifted by one byte so the
    /// work happens in the C library's vectorized memcmp instead of a Swift byte loop.
    static func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return true }
        guard base.load(as: UInt8.self) == 0 else { return false }
        return memcmp(base, base + 1, buffer.count - 1) == 0
    }

    /// Calls `write` for each run of `buffer` that is not all zeros, judged `granularity` bytes at a time,
    /// so zero-filled parts of allocated blocks stay holes in the output.
    static func forEachNonZeroRun(in buffer: UnsafeRawBufferPointer, granularity: Int,
                                  _ write: (_ start: Int, _ run: UnsafeRawBufferPointer) throws -> Void) throws {
        var runStart: Int?
        var position = 0
        while position < buffer.count {
            let end = min(position + granularity, buffer.count)
            let zero = isAllZero(UnsafeRawBufferPointer(rebasing: buffer[position..<end]))
            if zero, let start = runStart {
                try write(start, UnsafeRawBufferPointer(rebasing: buffer[start..<position]))
                runStart = nil
            } else if !zero, runStart == nil {
                runStart = position
            }
            position = end
        }
        if let start = runStart { try write(start, UnsafeRawBufferPointer(rebasing: buffer[start..<buffer.count])) }
    }
}
