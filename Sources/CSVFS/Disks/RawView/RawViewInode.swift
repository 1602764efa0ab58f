/// The inodes the volume shows beside its files: `.csvfs` in the root, and in it `raw`, the raw view, which
/// mirrors every directory and shows every VHD/VHDX file as its flattened virtual disk. A mirror's inode
/// number is its file's with one high bit set, so it needs no table and means the same after the kernel
/// forgets it; the volume's own inode numbers never come near that bit.
enum RawViewInode: Equatable {
    static let mirrorBit: UInt64 = 1 << 62
    static let controlName = Array(".csvfs".utf8)
    static let rawName = Array("raw".utf8)

    /// `.csvfs`.
    case control
    /// The raw view of the file or directory `ino`; `.csvfs/raw` itself mirrors the root.
    case mirror(UInt64)

    init?(_ ino: UInt64) {
        guard ino & Self.mirrorBit != 0 else { return nil }
        let real = ino & ~Self.mirrorBit
        self = real == 0 ? .control : .mirror(real)
    }

    var ino: UInt64 {
        switch self {
        case .control: return Self.mirrorBit
        case .mirror(let real): return real | Self.mirrorBit
        }
    }

    /// The volume's inode under it (the root's for `.csvfs`): whose open count and file locks it uses.
    var real: UInt64 {
        switch self {
        case .control: return MetadataStore.rootInode
        case .mirror(let real): return real
        }
    }

    /// The inode whose file locks a lock on `ino` takes: a disk's raw view and its image file are one disk,
    /// so QEMU's image locks on either exclude each other.
    static func lockedInode(_ ino: UInt64) -> UInt64 { RawViewInode(ino)?.real ?? ino }

    /// Whether `name` in `parent` is `.csvfs`, a name no file of the volume can take.
    static func isControlName(_ name: [UInt8], in parent: UInt64) -> Bool {
        parent == MetadataStore.rootInode && name == controlName
    }
}
