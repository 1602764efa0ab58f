import Glibc

/// Page-aligned memory for O_DIRECT transfers, which need aligned buffers.
public final class AlignedBuffer: @unchecked Sendable {
    // Sendable by ownership: one request uses a buffer at a time, handed out by `AlignedBufferPool`.
    public let pointer: UnsafeMutableRawPointer
    public let capacity: Int
    public static let alignment = 4096

    public init(capacity: Int) {
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, Self.alignment, capacity) == 0, let memory else {
            fatalError("out of memory allocating \(capacity) aligned bytes")
        }
        pointer = memory
        self.capacity = capacity
    }

    deinit { free(pointer) }
}
