import Glibc

/// A 4096-aligned buffer for O_DIRECT I/O.
final class AlignedBuffer {
    let pointer: UnsafeMutableRawPointer
    let size: Int

    init(size: Int, alignment: Int = 4096) throws {
        var memory: UnsafeMutableRawPointer?
        let rc = posix_memalign(&memory, alignment, size)
        guard rc == 0, let memory else { throw SyscallError(call: "posix_memalign", code: rc) }
        pointer = memory
        self.size = size
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    }

    deinit { free(pointer) }

    func fill(with bytes: [UInt8]) {
        bytes.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: min($0.count, size)) }
    }

    var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: pointer, count: size)) }
}
