import Glibc

/// The POSIX attributes of one inode, as the metadata service reports them.
public struct InodeAttributes: Sendable, Equatable {
    public var ino: UInt64
    public var mode: UInt32
    public var nlink: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    /// Bytes of data region held by the file (what `st_blocks` counts).
    public var allocated: UInt64
    public var rdev: UInt64
    /// Times in nanoseconds since the epoch.
    public var atime: Int64
    public var mtime: Int64
    public var ctime: Int64

    public var fileType: UInt32 { mode & UInt32(S_IFMT) }
    public var isDirectory: Bool { fileType == UInt32(S_IFDIR) }
    public var isRegular: Bool { fileType == UInt32(S_IFREG) }
}

/// What a setattr changes; nil leaves a field alone.
public struct AttributeChanges: Sendable, Equatable {
    public enum Time: Sendable, Equatable { case now, at(Int64) }
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atime: Time?
    public var mtime: Time?

    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
                atime: Time? = nil, mtime: Time? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.atime = atime
        self.mtime = mtime
    }
}

/// Who asks: the owner given to new inodes.
public struct Caller: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }
}

public struct DirectoryEntry: Sendable, Equatable {
    public var name: [UInt8]
    public var ino: UInt64
    public var mode: UInt32
    /// The readdir offset that continues after this entry.
    public var nextCookie: Int64
    /// Filled for readdirplus.
    public var attributes: InodeAttributes?
}

public struct VolumeStatistics: Sendable, Equatable {
    public var blockSize: UInt64
    public var totalBlocks: UInt64
    public var freeBlocks: UInt64
    public var totalInodes: UInt64
    public var freeInodes: UInt64
    public static let nameMax: UInt64 = 255
}

public enum RenameMode: Sendable { case replace, noReplace, exchange }

public enum FallocateMode: Sendable, Equatable {
    case allocate(keepSize: Bool)
    case punchHole
    case zeroRange(keepSize: Bool)
}

/// The root directory's inode number: FUSE's FUSE_ROOT_ID, and the first inode the store makes.
public let rootInodeNumber: UInt64 = 1

/// A file open on a node, as the coordinator counts its opens (`csvfs status`).
/// One open file of a node, as the coordinator that opened it numbered it: told to a new coordinator, which
/// keeps the handle (the node's kernel goes on using it).
public struct OpenHandle: Sendable, Hashable {
    public var ino: UInt64
    public var handle: UInt64

    public init(ino: UInt64, handle: UInt64) {
        self.ino = ino
        self.handle = handle
    }
}

public struct OpenFile: Sendable, Equatable, Codable {
    public var node: UInt32
    public var ino: UInt64
    /// Open file descriptions of it on that node.
    public var handles: UInt32
    /// One of its names from the root, nil when it has none left (unlinked while open).
    public var path: String?

    public init(node: UInt32, ino: UInt64, handles: UInt32, path: String?) {
        self.node = node
        self.ino = ino
        self.handles = handles
        self.path = path
    }
}

/// A piece of a file's byte range as the data path sees it: where on the LUN, or nowhere (a hole).
public struct FileSegment: Sendable, Equatable {
    public var logical: Int64
    public var length: Int64
    /// Byte offset on the LUN, nil for a hole.
    public var physical: Int64?
    /// Allocated but never written: reads as zeros, and a write must fill its whole blocks.
    public var unwritten: Bool

    public init(logical: Int64, length: Int64, physical: Int64?, unwritten: Bool) {
        self.logical = logical
        self.length = length
        self.physical = physical
        self.unwritten = unwritten
    }

    /// Allocated and written: its bytes are on the LUN.
    public var isWritten: Bool { physical != nil && !unwritten }
}

public enum Time {
    public static func nowNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}
