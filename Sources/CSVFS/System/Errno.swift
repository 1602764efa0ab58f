import Glibc

/// A POSIX error number, the one currency of failure between the filesystem layers and the FUSE adapter.
///
/// swift-system's `Errno` (SystemPackage 1.8.1) is the same idea and would do on its own, but CSVFS
/// keeps its own `FileDescriptor` (see there why), and importing SystemPackage for its `Errno` brings its
/// `FileDescriptor` too: every file and client that imports both modules would then have two
/// `FileDescriptor`s to disambiguate, for a gain of one 30-line struct. Its `current` is internal as well.
public struct Errno: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let code: Int32

    public init(_ code: Int32) { self.code = code }

    /// The calling thread's errno, read right after a failed call.
    public static var current: Errno { Errno(errno) }

    public var description: String { String(cString: strerror(code)) }

    public static let noEntry = Errno(ENOENT)
    public static let exists = Errno(EEXIST)
    public static let notEmpty = Errno(ENOTEMPTY)
    public static let isDirectory = Errno(EISDIR)
    public static let notDirectory = Errno(ENOTDIR)
    public static let nameTooLong = Errno(ENAMETOOLONG)
    public static let noSpace = Errno(ENOSPC)
    public static let invalid = Errno(EINVAL)
    public static let io = Errno(EIO)
    public static let notPermitted = Errno(EPERM)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let noData = Errno(ENODATA)
    public static let range = Errno(ERANGE)
    public static let fileTooBig = Errno(EFBIG)
    public static let tooManyLinks = Errno(EMLINK)
    public static let crossDevice = Errno(EXDEV)
    public static let busy = Errno(EBUSY)
    public static let textBusy = Errno(ETXTBSY)
    public static let noSys = Errno(ENOSYS)
    public static let wouldBlock = Errno(EAGAIN)
    public static let deadlock = Errno(EDEADLK)
    public static let interrupted = Errno(EINTR)
    public static let noLocks = Errno(ENOLCK)
    /// A metadata channel's answer when the connection to the coordinator went with the request in flight:
    /// whether the call took effect is unknown. Never reaches the kernel (see `RemoteMetadataService`).
    public static let connectionLost = Errno(ECONNRESET)
}

/// Retries a syscall that failed with EINTR; the one place that knows about EINTR.
@inline(__always)
func retryingOnInterrupt<T: BinaryInteger>(_ call: () -> T) throws(Errno) -> T {
    while true {
        let result = call()
        if result >= 0 { return result }
        let error = Errno.current
        if error.code != EINTR { throw error }
    }
}
