/// One contiguous piece of LUN I/O. For an O_DIRECT descriptor, buffer, count and offset are block-aligned.
struct LUNTransfer {
    enum Direction { case read, write }
    var direction: Direction
    var buffer: UnsafeMutableRawPointer
    var count: Int
    var offset: Int64

    static func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64) -> LUNTransfer {
        LUNTransfer(direction: .read, buffer: buffer, count: count, offset: offset)
    }

    static func write(from buffer: UnsafeRawPointer, count: Int, at offset: Int64) -> LUNTransfer {
        LUNTransfer(direction: .write, buffer: UnsafeMutableRawPointer(mutating: buffer), count: count, offset: offset)
    }
}

/// How file data moves between memory and the LUN. A transfer that moves fewer bytes than asked (the LUN ends
/// first) fails with EIO; any error of the LUN reaches the caller as its errno, never retried another way.
protocol LUNIO: Sendable {
    /// Runs every transfer and returns once all have finished; throws the first error.
    func perform(_ transfers: [LUNTransfer]) throws(Errno)
    /// Stops the engine's threads; no transfer may be started afterwards.
    func close()
}

/// The choice of LUN I/O engine, a mount option (`-o io=aio` or `-o io=threads`).
public enum LUNIOMode: String, Sendable, CaseIterable {
    /// Linux native AIO: a request's transfers are in flight together, one thread reaps all completions.
    case aio
    /// pread/pwrite on the thread that serves the request, one transfer after another.
    case threads
}

/// Thread-per-request I/O: each transfer is a pread or pwrite on the calling thread.
struct ThreadedLUNIO: LUNIO {
    let fd: FileDescriptor
    let metrics = LUNIOMetrics()

    func perform(_ transfers: [LUNTransfer]) throws(Errno) {
        metrics.record(transfers)
        for transfer in transfers {
            switch transfer.direction {
            case .read:
                if try fd.read(into: transfer.buffer, count: transfer.count, at: transfer.offset) < transfer.count {
                    throw Errno.io
                }
            case .write:
                try fd.write(from: transfer.buffer, count: transfer.count, at: transfer.offset)
            }
        }
    }

    func close() {}
}
