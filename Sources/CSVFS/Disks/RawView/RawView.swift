import Glibc

/// The names and attributes of `.csvfs` and of the raw view under it, `.csvfs/raw/PATH` being the raw disk
/// of the image at `PATH`: directories are mirrored (read-only), VHD/VHDX files shown at their virtual
/// size, anything else not shown. The disks' data goes through `RawDisks`.
final class RawView: Sendable {
    let service: any MetadataService
    let images: DiskAttributes
    let disks: RawDisks

    init(service: any MetadataService, images: DiskAttributes, disks: RawDisks) {
        self.service = service
        self.images = images
        self.disks = disks
    }

    func lookup(in parent: RawViewInode, name: [UInt8]) throws(Errno) -> InodeAttributes {
        switch parent {
        case .control:
            guard name == RawViewInode.rawName else { throw .noEntry }
            return try attributes(.mirror(MetadataStore.rootInode))
        case .mirror(let directory):
            let found = try service.lookup(parent: directory, name: name)
            // Its name, so a differencing image's relative parent locators can be followed from its directory.
            images.names.saw(found.ino, parent: directory, name: name)
            guard let mirror = try mirrored(found) else { throw .noEntry }
            return mirror
        }
    }

    func attributes(_ node: RawViewInode) throws(Errno) -> InodeAttributes {
        switch node {
        case .control:
            var control = try service.attributes(MetadataStore.rootInode)
            control.ino = node.ino
            control.mode = UInt32(S_IFDIR) | 0o555
            control.nlink = 3
            control.uid = 0
            control.gid = 0
            return control
        case .mirror(let real):
            // No longer an image (rewritten as something else): its raw disk is gone.
            guard let mirror = try mirrored(try service.attributes(real)) else { throw .noEntry }
            return mirror
        }
    }

    /// The raw view of a file or directory of the volume; nil when it shows nothing for it.
    func mirrored(_ attributes: InodeAttributes) throws(Errno) -> InodeAttributes? {
        var mirror = attributes
        mirror.ino = RawViewInode.mirror(attributes.ino).ino
        if attributes.isDirectory {
            mirror.mode &= ~0o222
            return mirror
        }
        guard attributes.isRegular else { return nil }
        if let size = disks.virtualSize(attributes.ino) {
            mirror.size = size
        } else {
            switch try images.layerState(attributes, path: { images.hostPath(of: attributes.ino) }) {
            case .notImage: return nil
            // Shown, so that opening it says what is wrong (EIO, and the log names the problem).
            case .damaged: mirror.size = 0
            case .image(let facts): mirror.size = facts.facts.virtualSize
            }
        }
        mirror.nlink = 1
        return mirror
    }

    /// A listing of a raw-view directory: its subdirectories and images, under the volume's own cookies.
    func readdir(_ node: RawViewInode, after cookie: Int64, limit: Int) throws(Errno) -> [DirectoryEntry] {
        switch node {
        case .control:
            let root = try service.attributes(MetadataStore.rootInode)
            let all = [
                DirectoryEntry(name: [46], ino: node.ino, mode: UInt32(S_IFDIR), nextCookie: 1, attributes: try attributes(node)),
                DirectoryEntry(name: [46, 46], ino: root.ino, mode: UInt32(S_IFDIR), nextCookie: 2, attributes: nil),
                DirectoryEntry(name: RawViewInode.rawName, ino: RawViewInode.mirror(root.ino).ino, mode: UInt32(S_IFDIR),
                               nextCookie: 3, attributes: try attributes(.mirror(root.ino))),
            ]
            return all.filter { $0.nextCookie > cookie }
        case .mirror(let directory):
            var cookie = cookie
            while true {
                let entries = try service.readdir(directory, after: cookie, limit: limit, plus: true)
                guard let last = entries.last else { return [] }
                var shown: [DirectoryEntry] = []
                for var entry in entries {
                    if entry.name == [46] {
                        entry.ino = node.ino
                        entry.attributes = entry.attributes.flatMap { try? mirrored($0) }
                    } else if entry.name == [46, 46] {
                        entry.ino = directory == MetadataStore.rootInode ? RawViewInode.control.ino : RawViewInode.mirror(entry.ino).ino
                    } else {
                        guard let attributes = entry.attributes, let mirror = try mirrored(attributes) else { continue }
                        images.names.saw(attributes.ino, parent: directory, name: entry.name)
                        entry.ino = mirror.ino
                        entry.attributes = mirror
                    }
                    shown.append(entry)
                }
                // An empty batch would end the listing: go on until something is shown or nothing is left.
                if !shown.isEmpty { return shown }
                cookie = last.nextCookie
            }
        }
    }
}
