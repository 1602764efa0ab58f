import Primitives
import VHDFormat

/// A file of the volume as VHDFormat reads and writes images: through the data path, never through the
/// mountpoint, where the server would wait on the kernel that waits on the server.
final class InodeImageStorage: ImageStorage, @unchecked Sendable {
    // @unchecked: every stored property is immutable or a `Locked`; the data path and the service are Sendable.
    /// Reads go to the data path in pieces of at most this, so one large structure (a VHDX BAT) does not
    /// take one large buffer from the pool.
    private static let largestTransfer = 1 << 20

    private let ino: UInt64
    private let path: String
    private let fileSize: Locked<UInt64>
    private let data: DataPath
    /// Set for a writable file: where its size changes and its flushes go.
    private let writer: (any MetadataService)?

    /// `size` is the size the caller's cache entry was keyed on, so the parse and the key agree. With a
    /// `writer` the file is writable, and the size follows the writes.
    init(ino: UInt64, size: UInt64, path: String, data: DataPath, writer: (any MetadataService)? = nil) {
        self.ino = ino
        fileSize = Locked(size)
        self.path = path
        self.data = data
        self.writer = writer
    }

    var isWritable: Bool { writer != nil }

    func size() throws -> UInt64 { fileSize.withLock { $0 } }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let end = try size()
        var done = 0
        while done < buffer.count, offset + UInt64(done) < end {
            let count = min(buffer.count - done, Self.largestTransfer)
            let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
            let got: Int
            do {
                got = try data.read(ino, offset: Int64(offset) + Int64(done), count: count) { bytes in
                    destination.copyMemory(from: bytes)
                    return bytes.count
                }
            } catch {
                throw VHDError.io(path: path, operation: "read", errno: error.code)
            }
            if got == 0 { break }
            done += got
        }
        return done
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard writer != nil else { throw VHDError.readOnly(path: path) }
        var done = 0
        while done < buffer.count {
            let count = min(buffer.count - done, Self.largestTransfer)
            let source = UnsafeRawBufferPointer(rebasing: buffer[done..<(done + count)])
            do {
                // Through an aligned buffer: VHDFormat's buffers are not aligned for O_DIRECT.
                try data.write(ino, offset: Int64(offset) + Int64(done), count: count) { destination in
                    destination.copyMemory(from: source.baseAddress!, byteCount: count)
                }
            } catch {
                throw VHDError.io(path: path, operation: "write", errno: error.code)
            }
            done += count
        }
        let end = offset + UInt64(buffer.count)
        fileSize.withLock { $0 = max($0, end) }
    }

    func truncate(to size: UInt64) throws {
        guard writer != nil else { throw VHDError.readOnly(path: path) }
        do {
            _ = try data.truncate(ino, AttributeChanges(size: size))
        } catch {
            throw VHDError.io(path: path, operation: "truncate", errno: error.code)
        }
        fileSize.withLock { $0 = size }
    }

    func sync() throws {
        guard let writer else { return }
        do {
            try writer.sync()
        } catch {
            throw VHDError.io(path: path, operation: "flush", errno: error.code)
        }
    }
}
