/// Cluster-wide file locks: the values the FUSE adapter, the coordinator's lock table and the wire share.
///
/// The kernel sends POSIX record locks and OFD locks alike (`FUSE_SETLK` with a lock owner: a process's file
/// table for POSIX, the open file description for OFD), so both are `.record` locks and differ only in their
/// owner. flock locks come flagged apart and live in their own space: on Linux they never conflict with
/// record locks.
public enum FileLockKind: UInt8, Sendable, Hashable {
    case record = 1
    case flock = 2
}

public enum FileLockMode: UInt8, Sendable, Hashable {
    case shared = 1
    case exclusive = 2
}

/// Who holds a lock: the kernel's lock owner on one node's mount. Owners of different nodes never compare
/// equal, even when their kernels chose the same number.
public struct FileLockOwner: Sendable, Hashable, CustomStringConvertible {
    public var node: UInt32
    public var owner: UInt64

    public init(node: UInt32, owner: UInt64) {
        self.node = node
        self.owner = owner
    }

    public var description: String { "\(node):\(String(owner, radix: 16))" }
}

/// A byte range as the kernel gives it: first and last byte, both included; `FileLockRange.endOfFile` as the
/// last byte means "to the end of the file, however far it grows" (the kernel's OFFSET_MAX).
public struct FileLockRange: Sendable, Hashable, CustomStringConvertible {
    public var first: Int64
    public var last: Int64
    public static let endOfFile = Int64.max
    public static let wholeFile = FileLockRange(first: 0, last: endOfFile)

    public init(first: Int64, last: Int64) {
        self.first = first
        self.last = last
    }

    public func overlaps(_ other: FileLockRange) -> Bool { first <= other.last && other.first <= last }

    public var description: String { last == Self.endOfFile ? "\(first)-EOF" : "\(first)-\(last)" }
}

/// A lock one owner holds, or asks for, on a range of one inode.
public struct FileLock: Sendable, Hashable {
    public var ino: UInt64
    public var kind: FileLockKind
    public var mode: FileLockMode
    public var range: FileLockRange
    public var owner: FileLockOwner
    /// The open file (the coordinator's handle, the `fh` of the kernel's request) the lock was taken through:
    /// its release drops the OFD and flock locks taken through it.
    public var handle: UInt64
    /// The process that asked, as its node's kernel numbers it: `F_GETLK` answers it.
    public var pid: UInt32

    public init(ino: UInt64, kind: FileLockKind, mode: FileLockMode, range: FileLockRange, owner: FileLockOwner,
                handle: UInt64, pid: UInt32) {
        self.ino = ino
        self.kind = kind
        self.mode = mode
        self.range = range
        self.owner = owner
        self.handle = handle
        self.pid = pid
    }

    /// Whether the two locks cannot both be held: different owners, same inode and kind, overlapping ranges,
    /// at least one exclusive.
    public func conflicts(with other: FileLock) -> Bool {
        owner != other.owner && ino == other.ino && kind == other.kind && range.overlaps(other.range)
            && (mode == .exclusive || other.mode == .exclusive)
    }
}

/// An inode whose file locks one node keeps itself for now (it holds the inode's DLM lock in EX): the
/// coordinator's table has none of them until the node gives them back.
public struct DelegatedInode: Sendable, Hashable {
    public var ino: UInt64
    public var node: UInt32

    public init(ino: UInt64, node: UInt32) {
        self.ino = ino
        self.node = node
    }
}
