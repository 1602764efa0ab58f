import CSVFS

/// What a node keeps of the metadata it read, so lookups, stats and the data path's map reads need no round
/// trip to the coordinator. Valid only while the node holds the inode's licence (`InodeLicenceTable`): an
/// inode's attributes and extent map, and a directory's names, are dropped when its lock is given up or
/// converted.
struct NodeMetadataCache {
    enum Name: Equatable {
        case inode(UInt64)
        case absent
    }

    private var attributes: [UInt64: InodeAttributes] = [:]
    private var names: [UInt64: [[UInt8]: Name]] = [:]
    private var maps: [UInt64: CachedFileMap] = [:]
    /// Inodes overwritten in place under EX whose new mtime the coordinator has not heard of yet: it is told
    /// before the lock goes, before another change of the inode, and at stat, fsync and close.
    private(set) var writtenInPlace: Set<UInt64> = []
    /// The size last seen of each regular file, kept across licences: only to choose between calls.
    private var sizeHints: [UInt64: UInt64] = [:]

    func attributes(_ ino: UInt64) -> InodeAttributes? { attributes[ino] }
    func name(_ name: [UInt8], in parent: UInt64) -> Name? { names[parent]?[name] }
    func map(_ ino: UInt64) -> CachedFileMap? { maps[ino] }
    func sizeHint(_ ino: UInt64) -> UInt64? { sizeHints[ino] }

    mutating func store(_ value: InodeAttributes) { attributes[value.ino] = value }
    mutating func hintSize(_ value: InodeAttributes) { if value.isRegular { sizeHints[value.ino] = value.size } }
    mutating func store(_ name: [UInt8], in parent: UInt64, as entry: Name) { names[parent, default: [:]][name] = entry }

    /// Adds a window of `ino`'s map; a size unlike the cached one's means the rest is older: it goes.
    mutating func store(_ ino: UInt64, size: UInt64, window: Range<Int64>, segments: [FileSegment]) {
        sizeHints[ino] = size
        if maps[ino]?.size != size { maps[ino] = CachedFileMap(size: size) }
        maps[ino]!.add(window, segments)
    }

    /// An overwrite in place: the data is on the LUN, the map unchanged, the mtime changed.
    mutating func wroteInPlace(_ ino: UInt64) {
        attributes[ino] = nil
        writtenInPlace.insert(ino)
    }

    mutating func takeWrittenInPlace(_ ino: UInt64) -> Bool { writtenInPlace.remove(ino) != nil }

    /// What a change of `ino` may have made stale: its attributes and its map.
    mutating func dropChanged(_ ino: UInt64) {
        attributes[ino] = nil
        maps[ino] = nil
    }

    mutating func dropName(_ name: [UInt8], in parent: UInt64) { names[parent]?[name] = nil }

    /// Everything the inode's lock protects (not what waits to be told to the coordinator).
    mutating func drop(_ ino: UInt64) {
        sizeHints[ino] = nil
        attributes[ino] = nil
        names[ino] = nil
        maps[ino] = nil
    }

    /// Everything but what waits to be told to the coordinator.
    mutating func dropAll() {
        attributes = [:]
        names = [:]
        maps = [:]
    }

    var count: (attributes: Int, names: Int, maps: Int) {
        (attributes.count, names.values.reduce(0) { $0 + $1.count }, maps.count)
    }
}
