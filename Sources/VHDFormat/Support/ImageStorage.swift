#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes of one image file. The library reads images through this, so a caller that must not open the
/// file by its path (CSVFS serves the volume the images live on, and reading through its own mountpoint
/// could deadlock) can hand over its own view of the file.
public protocol ImageStorage: AnyObject {
    /// Reads into `buffer` at `offset`; returns how many bytes were read, fewer than asked only at the end of the file.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    func size() throws -> UInt64
    var isWritable: Bool { get }
    /// Writes all of `buffer`; only called when `isWritable`.
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws
    func truncate(to size: UInt64) throws
    func sync() throws
    /// The parts of `offset..<end` that hold data (holes read as zeros); nil when the storage cannot tell.
    func dataRuns(at offset: UInt64, upTo end: UInt64) -> [(offset: UInt64, length: UInt64)]?
}

extension ImageStorage {
    public var isWritable: Bool { false }
    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        throw VHDError.invalidArgument("image storage is read-only")
    }
    public func truncate(to size: UInt64) throws { throw VHDError.invalidArgument("image storage is read-only") }
    public func sync() throws {}
    public func dataRuns(at offset: UInt64, upTo end: UInt64) -> [(offset: UInt64, length: UInt64)]? { nil }
}

/// An image file on the host, opened by path for positional I/O.
final class POSIXImageStorage: ImageStorage {
    let path: String
    let isWritable: Bool
    private let descriptor: Int32

    init(path: String, writable: Bool, create: Bool) throws {
        self.path = path
        isWritable = writable
        var flags = writable ? O_RDWR : O_RDONLY
        if create { flags |= O_CREAT | O_EXCL }
        let fd = open(path, flags | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw VHDError.io(path: path, operation: create ? "create" : "open", errno: errno) }
        descriptor = fd
    }

    deinit { close(descriptor) }

    func size() throws -> UInt64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw VHDError.io(path: path, operation: "stat", errno: errno) }
        return UInt64(info.st_size)
    }

    /// Callers have checked that `offset` plus the count fits in off_t.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw VHDError.io(path: path, operation: "read", errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw VHDError.io(path: path, operation: "write", errno: errno)
            }
            done += n
        }
    }

    func truncate(to size: UInt64) throws {
        guard ftruncate(descriptor, off_t(size)) == 0 else {
            throw VHDError.io(path: path, operation: "truncate", errno: errno)
        }
    }

    func sync() throws {
        guard fsync(descriptor) == 0 else { throw VHDError.io(path: path, operation: "fsync", errno: errno) }
    }

    func dataRuns(at offset: UInt64, upTo end: UInt64) -> [(offset: UInt64, length: UInt64)]? {
        let seekData: Int32 = 3, seekHole: Int32 = 4  // SEEK_DATA, SEEK_HOLE (Linux, FreeBSD, macOS)
        var runs: [(offset: UInt64, length: UInt64)] = []
        var position = offset
        while position < end {
            let data = lseek(descriptor, off_t(position), seekData)
            if data < 0 {
                if errno == ENXIO { break }  // only holes up to the end of the file
                return nil
            }
            let dataStart = UInt64(data)
            guard dataStart < end else { break }
            let hole = lseek(descriptor, off_t(dataStart), seekHole)
            let dataEnd = hole < 0 ? end : min(UInt64(hole), end)
            runs.append((dataStart, dataEnd - dataStart))
            position = dataEnd
        }
        return runs
    }
}
