import Glibc
import CSVFSSystem
import Primitives

/// A thin typed wrapper over an open file descriptor: positional I/O that never returns short counts.
///
/// Not swift-system's `FileDescriptor` (apple/swift-system 1.8.1 read for this), because the LUN needs
/// what that one does not give: it is not `Sendable` (deliberately, upstream PR #112), and ours is shared
/// by every FUSE worker through `LUNDevice`; its `open`/`pread`/`pwrite` throw untyped errors, ours throw
/// `Errno` so a failure reaches the FUSE reply as an errno with no cast and no "unknown error" path; it
/// has no `O_DIRECT` open (its options stop at `O_DIRECTORY`), no read that retries short counts at an
/// offset, and no size for a block device (`BLKGETSIZE64`).
public struct FileDescriptor: Sendable, Hashable {
    public let rawValue: Int32
    /// The LUN's write fence, on the LUN's descriptors: a write it refuses fails with EIO and is not issued.
    public let fence: WriteFence?

    public init(rawValue: Int32, fence: WriteFence? = nil) {
        self.rawValue = rawValue
        self.fence = fence
    }

    /// This descriptor, its writes admitted by `fence`.
    public func fenced(by fence: WriteFence) -> FileDescriptor { FileDescriptor(rawValue: rawValue, fence: fence) }

    public static func == (a: FileDescriptor, b: FileDescriptor) -> Bool { a.rawValue == b.rawValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }

    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws(Errno) -> FileDescriptor {
        let fd = try retryingOnInterrupt { Glibc.open(path, flags | O_CLOEXEC, mode) }
        return FileDescriptor(rawValue: fd)
    }

    /// Opens with O_DIRECT, or returns nil where the medium refuses it (tmpfs, some overlays).
    public static func openDirect(_ path: String, _ flags: Int32) -> FileDescriptor? {
        let fd = csvfs_open_direct(path, flags)
        return fd >= 0 ? FileDescriptor(rawValue: fd) : nil
    }

    public func close() { _ = Glibc.close(rawValue) }

    /// Reads exactly `count` bytes unless the file ends first; returns how many were read.
    @discardableResult
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64) throws(Errno) -> Int {
        var done = 0
        while done < count {
            let n = try retryingOnInterrupt { pread(rawValue, buffer + done, count - done, off_t(offset) + off_t(done)) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func write(from buffer: UnsafeRawPointer, count: Int, at offset: Int64) throws(Errno) {
        var done = 0
        while done < count {
            if let fence, !fence.admits() { throw Errno.io }
            let n = try retryingOnInterrupt { LUNWriteRecorder.pwrite(rawValue, buffer + done, count - done, off_t(offset) + off_t(done)) }
            if n == 0 { throw Errno.io }
            done += n
        }
    }

    public func read(count: Int, at offset: Int64) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { raw in
            Result { () throws(Errno) -> Int in try read(into: raw.baseAddress!, count: count, at: offset) }
        }
        let got = try n.get()
        if got < count { bytes.removeLast(count - got) }
        return bytes
    }

    public func write(_ bytes: [UInt8], at offset: Int64) throws(Errno) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(Errno) in try write(from: raw.baseAddress!, count: raw.count, at: offset) }
        }
        try result.get()
    }

    public func dataSync() throws(Errno) {
        _ = try retryingOnInterrupt { LUNWriteRecorder.flush(rawValue, fdatasync) }
    }

    public func size() throws(Errno) -> Int64 {
        var info = stat()
        _ = try retryingOnInterrupt { fstat(rawValue, &info) }
        if (info.st_mode & S_IFMT) == S_IFBLK {
            let size = csvfs_block_device_size(rawValue)
            if size < 0 { throw Errno.current }
            return size
        }
        return Int64(info.st_size)
    }

    public func isBlockDevice() -> Bool {
        var info = stat()
        return fstat(rawValue, &info) == 0 && (info.st_mode & S_IFMT) == S_IFBLK
    }
}
