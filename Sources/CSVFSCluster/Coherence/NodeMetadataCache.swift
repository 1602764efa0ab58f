import CSVFS

/// What a node keeps of the metadata it read, so lookups and stats need no round trip to the coordinator.
/// Valid only while the node holds the inode's licence (`InodeLicenceTable`): an inode's attributes, and a
/// directory's names, are dropped when its lock is given up or converted.
struct NodeMetadataCache {
    enum Name: Equatable {
        case inode(UInt64)
        case absent
    }

    private var attributes: [UInt64: InodeAttributes] = [:]
    private var names: [UInt64: [[UInt8]: Name]] = [:]

    func attributes(_ ino: UInt64) -> InodeAttributes? { attributes[ino] }
    func name(_ name: [UInt8], in parent: UInt64) -> Name? { names[parent]?[name] }

    mutating func store(_ value: InodeAttributes) { attributes[value.ino] = value }
    mutating func store(_ name: [UInt8], in parent: UInt64, as entry: Name) { names[parent, default: [:]][name] = entry }

    mutating func dropAttributes(_ ino: UInt64) { attributes[ino] = nil }
    mutating func dropName(_ name: [UInt8], in parent: UInt64) { names[parent]?[name] = nil }

    /// Everything the inode's lock protects.
    mutating func drop(_ ino: UInt64) {
        attributes[ino] = nil
        names[ino] = nil
    }

    var count: (attributes: Int, names: Int) { (attributes.count, names.values.reduce(0) { $0 + $1.count }) }
}
