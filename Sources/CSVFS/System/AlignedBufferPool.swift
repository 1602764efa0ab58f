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
        let buffer = borrow(minimumCapacity: minimumCapacity)
        defer { giveBack(buffer) }
        return try body(buffer)
    }

    /// A buffer for work that ends on another thread (an asynchronous read); `giveBack` it when done.
    public func borrow(minimumCapacity: Int) -> AlignedBuffer {
        guard minimumCapacity <= bufferSize else { return AlignedBuffer(capacity: (minimumCapacity + 4095) & ~4095) }
        return free.withLock { $0.popLast() } ?? AlignedBuffer(capacity: bufferSize)
    }

    public func giveBack(_ buffer: AlignedBuffer) {
        guard buffer.capacity == bufferSize else { return }
        free.withLock { if $0.count < keep { $0.append(buffer) } }
    }
}
