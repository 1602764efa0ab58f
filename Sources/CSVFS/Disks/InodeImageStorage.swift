import VHDFormat

/// A file of the volume as VHDFormat reads images: through the data path, never through the mountpoint,
/// where the server would wait on the kernel that waits on the server.
final class InodeImageStorage: ImageStorage {
    /// Reads go to the data path in pieces of at most this, so one large structure (a VHDX BAT) does not
    /// take one large buffer from the pool.
    private static let largestRead = 1 << 20

    private let ino: UInt64
    private let path: String
    private let fileSize: UInt64
    private let data: DataPath

    /// `size` is the size the caller's cache entry was keyed on, so the parse and the key agree.
    init(ino: UInt64, size: UInt64, path: String, data: DataPath) {
        self.ino = ino
        fileSize = size
        self.path = path
        self.data = data
    }

    func size() throws -> UInt64 { fileSize }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count, offset + UInt64(done) < fileSize {
            let count = min(buffer.count - done, Self.largestRead)
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
}
