import CPrimitives
import Glibc

/// Open-file-description byte-range locks: owned by the open file description (not the process, unlike
/// POSIX record locks), dropped by the kernel the instant the last descriptor of it closes, so a dead
/// process never holds one. The mount claim of a CSVFS volume and the `local` coordination backend use them.
public enum OFDLock {
    public struct Failure: Error, CustomStringConvertible {
        public let call: String
        public let code: Int32
        public var description: String { "\(call): \(String(cString: strerror(code)))" }
    }

    /// Takes a write lock on `range` without waiting: false if another open file description holds a
    /// conflicting lock there.
    public static func tryWriteLock(_ fd: Int32, _ range: Range<Int64>) throws(Failure) -> Bool {
        if primitives_ofd_try_write_lock(fd, range.lowerBound, Int64(range.count)) == 0 { return true }
        let code = errno
        if code == EAGAIN || code == EACCES { return false }
        throw Failure(call: "F_OFD_SETLK", code: code)
    }

    /// Takes a read (shared) lock on `range` without waiting: false if another open file description
    /// holds a write lock there.
    public static func tryReadLock(_ fd: Int32, _ range: Range<Int64>) throws(Failure) -> Bool {
        if primitives_ofd_try_read_lock(fd, range.lowerBound, Int64(range.count)) == 0 { return true }
        let code = errno
        if code == EAGAIN || code == EACCES { return false }
        throw Failure(call: "F_OFD_SETLK", code: code)
    }

    /// Takes a write lock on `range`, waiting (in the kernel, no polling) until no other open file
    /// description holds a conflicting one. Blocks the calling thread: call it from a thread of its own.
    public static func waitWriteLock(_ fd: Int32, _ range: Range<Int64>) throws(Failure) {
        while primitives_ofd_wait_write_lock(fd, range.lowerBound, Int64(range.count)) != 0 {
            guard errno == EINTR else { throw Failure(call: "F_OFD_SETLKW", code: errno) }
        }
    }

    public static func unlock(_ fd: Int32, _ range: Range<Int64>) throws(Failure) {
        guard primitives_ofd_unlock(fd, range.lowerBound, Int64(range.count)) == 0 else { throw Failure(call: "F_OFD_SETLK", code: errno) }
    }

    /// One lock of another open file description that conflicts with a write lock on `range`, as the
    /// bytes it covers; nil if there is none (this description's own locks never count). When several
    /// conflict, the kernel names one of them, not necessarily the lowest.
    public static func conflictingLock(_ fd: Int32, _ range: Range<Int64>) throws(Failure) -> Range<Int64>? {
        var found: Int32 = 0
        var start: Int64 = 0, length: Int64 = 0
        guard primitives_ofd_find_write_lock(fd, range.lowerBound, Int64(range.count), &found, &start, &length) == 0 else {
            throw Failure(call: "F_OFD_GETLK", code: errno)
        }
        guard found != 0 else { return nil }
        return start..<(length == 0 ? Int64.max : start + length)
    }
}
