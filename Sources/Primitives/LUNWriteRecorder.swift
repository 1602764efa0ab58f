import Glibc

/// A test's record of every write and flush this process sends to its LUN, in the order they returned (see
/// `LUNWriteLog` for the file): with `CSVFS_RECORD_LUN_WRITES=PATH` in the environment, the log is written to
/// PATH. Unset (always, outside tests), `shared` is nil and each I/O call below costs one branch more.
///
/// Every write and flush of the LUN goes through `pwrite`/`flush` here or, for native AIO, reports its
/// completion to `wrote`; which descriptors are the LUN is learnt from `watch` (the LUN's identity, so the
/// coordination backend's own descriptor on the same LUN counts too, and no other file does).
///
/// Each record is appended before the call it records returns to its caller, and a flush's start before the
/// flush is issued: whatever the process learns from a returned call happens after its record, so a write
/// recorded after a flush's start was not covered by it, and one recorded before was.
public final class LUNWriteRecorder: Sendable {
    public static let shared: LUNWriteRecorder? = getenv("CSVFS_RECORD_LUN_WRITES").map { LUNWriteRecorder(path: String(cString: $0)) }

    private struct Identity: Equatable {
        var device: UInt64
        var inode: UInt64
    }

    private struct State {
        var lun: Identity?
        var nextFlush: UInt64 = 1
    }

    private let path: String
    private let log: Int32
    private let state = Locked(State())

    private init(path: String) {
        self.path = path
        log = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard log >= 0 else { Self.fail("CSVFS_RECORD_LUN_WRITES=\(path): cannot create the log: \(String(cString: strerror(errno)))") }
        append(LUNWriteLog.magic)
    }

    /// A write, with `pwrite`'s arguments and result, recorded when it wrote anything to the LUN.
    public static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, _ offset: off_t) -> Int {
        let written = Glibc.pwrite(fd, buffer, count, offset)
        if let shared, written > 0 { shared.wrote(fd: fd, from: buffer, count: written, at: Int64(offset)) }
        return written
    }

    /// Runs `call` (an fsync or fdatasync of `fd`, returning what it returns) recorded as a flush of the LUN.
    public static func flush(_ fd: Int32, _ call: (Int32) -> Int32) -> Int32 {
        guard let shared, shared.isLUN(fd) else { return call(fd) }
        let id = shared.state.withLock { (state) -> UInt64 in
            defer { state.nextFlush += 1 }
            return state.nextFlush
        }
        shared.append(LUNWriteLog.encodeHead(kind: 2, id, 0))
        let result = call(fd)
        let failure = errno
        shared.append(LUNWriteLog.encodeHead(kind: 3, id, result == 0 ? 0 : UInt32(bitPattern: failure)))
        // The caller reads the flush's errno, not the log's.
        errno = failure
        return result
    }

    /// `fd` is the LUN (its first descriptor opened by this process names it); a second, different LUN in the
    /// same process is not recorded, and says so.
    public func watch(_ fd: Int32) {
        guard let identity = Self.identity(of: fd) else { return }
        let other = state.withLock { (state) -> Bool in
            if state.lun == nil { state.lun = identity }
            return state.lun != identity
        }
        if other { Self.warn("CSVFS_RECORD_LUN_WRITES records one LUN per process; descriptor \(fd) is another one, not recorded") }
    }

    /// A write that completed on `fd`, recorded if `fd` is the LUN.
    public func wrote(fd: Int32, from buffer: UnsafeRawPointer, count: Int, at offset: Int64) {
        guard isLUN(fd) else { return }
        var record = LUNWriteLog.encodeHead(kind: 1, UInt64(offset), UInt32(count))
        record.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: count))
        append(record)
    }

    private func isLUN(_ fd: Int32) -> Bool {
        guard let identity = Self.identity(of: fd) else { return false }
        return state.withLock { $0.lun == identity }
    }

    private static func identity(of fd: Int32) -> Identity? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        // Two device nodes of one block device share its number, not an inode.
        if (info.st_mode & S_IFMT) == S_IFBLK { return Identity(device: UInt64(info.st_rdev), inode: 0) }
        return Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// One record in one call, under the lock: records never interleave, and the log's size after a call
    /// returned counts every record before it.
    private func append(_ bytes: [UInt8]) {
        state.withLock { _ in
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(log, $0.baseAddress! + done, $0.count - done) }
                if n < 0 && errno == EINTR { continue }
                // A log with a record missing would make the test build images no crash could leave.
                guard n > 0 else { Self.fail("CSVFS_RECORD_LUN_WRITES=\(path): cannot write the log: \(String(cString: strerror(errno)))") }
                done += n
            }
        }
    }

    private static func warn(_ message: String) {
        let line = "csvfs: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    private static func fail(_ message: String) -> Never {
        warn(message)
        _exit(70)
    }
}
