import Primitives

/// The name under which the kernel last reached each inode it holds. FUSE's xattr requests carry only an
/// inode, the volume keeps no link from a file to its names, yet a differencing image's parent locators are
/// relative to the image's directory. Entries go when the kernel forgets the inode, so the table stays as
/// large as the kernel's own cache; each use checks the name against the volume, so a stale one is never trusted.
final class InodeNames: Sendable {
    private struct Name: Hashable {
        var parent: UInt64
        var name: [UInt8]
    }

    private struct Table {
        var byInode: [UInt64: Name] = [:]
        var byName: [Name: UInt64] = [:]

        mutating func remove(_ ino: UInt64) {
            guard let old = byInode.removeValue(forKey: ino) else { return }
            if byName[old] == ino { byName[old] = nil }
        }

        mutating func set(_ ino: UInt64, _ name: Name) {
            remove(ino)
            if let other = byName[name], other != ino { byInode[other] = nil }
            byInode[ino] = name
            byName[name] = ino
        }
    }

    private let table = Locked(Table())

    func saw(_ ino: UInt64, parent: UInt64, name: [UInt8]) {
        // "." and ".." (looked up only for NFS export) name another inode's place, not this one's.
        guard name != [46], name != [46, 46] else { return }
        let entry = Name(parent: parent, name: name)
        table.withLock { table in
            if table.byInode[ino] != entry { table.set(ino, entry) }
        }
    }

    func forgot(_ ino: UInt64) {
        table.withLock { $0.remove(ino) }
    }

    /// The kernel sends no lookup after its own rename: follow it here.
    func renamed(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], exchange: Bool) {
        let from = Name(parent: parent, name: name), to = Name(parent: newParent, name: newName)
        table.withLock { table in
            let moving = table.byName[from], displaced = table.byName[to]
            if let displaced { table.remove(displaced) }
            if let moving { table.set(moving, to) }
            if exchange, let displaced { table.set(displaced, from) }
        }
    }

    /// The names from the root down to `ino`, each checked by a lookup; nil when some step is not known or no longer true.
    func path(of ino: UInt64, service: any MetadataService) -> [[UInt8]]? {
        var components: [[UInt8]] = []
        var current = ino
        while current != MetadataStore.rootInode {
            // A directory cannot be inside itself, but a table built from stale names could say so.
            guard components.count < 4096, let name = table.withLock({ $0.byInode[current] }) else { return nil }
            guard let found = try? service.lookup(parent: name.parent, name: name.name), found.ino == current else { return nil }
            components.append(name.name)
            current = name.parent
        }
        return components.reversed()
    }
}
