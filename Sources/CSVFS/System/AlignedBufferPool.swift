/// Reusable aligned buffers for the data path, so a request does not pay for an allocation and its page faults.
public final class AlignedBufferPool: Sendable {
    private let free = Locked<[AlignedBuffer]>([])
    public let bufferSize: Int
    private let keep: Int

    public init(bufferSize: Int, keep: Int = 16) {
        self.bufferSize = bufferSize
        self.keep = keep
    }

    public func withBuffer<R, E: Error>(minimumCapacity: Int, _ body: (AlignedBuffer) throws(E) -> R) throws(E) -> R {
        guard minimumCapacity <= bufferSize else {
            return try body(AlignedBuffer(capacity: (minimumCapacity + 4095) & ~4095))
        }
        let buffer = free.withLock { $0.popLast() } ?? AlignedBuffer(capacity: bufferSize)
        defer { free.withLock { if $0.count < keep { $0.append(buffer) } } }
        return try body(buffer)
    }
}
