import VHDFormat

/// The read-only `user.vhd.*` attributes of every VHD and VHDX file on the volume, in front of the
/// metadata service's own xattr calls. Images are recognised by content; a file that is not one keeps
/// exactly the attributes stored for it, `user.vhd.*` names included. On an image the computed names
/// hide stored ones of the same prefix and cannot be set or removed (EPERM).
final class DiskAttributes: Sendable {
    static let prefix = Array("user.vhd.".utf8)
    /// Who owns the disk now: asked of the cluster only when this one attribute is read.
    static let ownerName = Array("user.vhd.owner".utf8)

    let service: any MetadataService
    let data: DataPath
    /// Absolute, without a trailing slash: the host path of the volume's root ("" when not known, and then
    /// paths are the volume's own, from its root).
    let mountpoint: String
    let names = InodeNames()
    private let layers = ImageLayerCache()
    private let ownership: any DiskOwnership

    init(service: any MetadataService, data: DataPath, mountpoint: String, ownership: any DiskOwnership) {
        self.service = service
        self.data = data
        self.ownership = ownership
        self.mountpoint = mountpoint == "/" ? "" : mountpoint
    }

    static func isDiskName(_ name: [UInt8]) -> Bool { name.starts(with: prefix) }

    // MARK: the xattr calls, as FUSE makes them

    func getXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) -> [UInt8] {
        if Self.isDiskName(name), let attributes = try diskAttributes(ino) {
            if name == Self.ownerName { return Array(try owner(ino).utf8) }
            guard let found = attributes.first(where: { $0.name == name }) else { throw Errno.noData }
            return found.value
        }
        return try service.getXattr(ino, name: name)
    }

    func listXattrs(_ ino: UInt64) throws(Errno) -> [[UInt8]] {
        let stored = try service.listXattrs(ino)
        guard let attributes = try diskAttributes(ino) else { return stored }
        return stored.filter { !Self.isDiskName($0) } + attributes.map(\.name) + [Self.ownerName]
    }

    func setXattr(_ ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool) throws(Errno) {
        if Self.isDiskName(name), try isImage(ino) { throw Errno.notPermitted }
        try service.setXattr(ino, name: name, value: value, create: create, replace: replace)
    }

    func removeXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) {
        if Self.isDiskName(name), try isImage(ino) { throw Errno.notPermitted }
        try service.removeXattr(ino, name: name)
    }

    // MARK: facts

    /// "node 2 (writing)", "node 1 (reading), node 3 (reading)", or "none".
    private func owner(_ ino: UInt64) throws(Errno) -> String {
        let owners = try ownership.owners(of: ino)
        guard !owners.isEmpty else { return "none" }
        return owners.map { "node \($0.node) (\($0.exclusive ? "writing" : "reading"))" }.joined(separator: ", ")
    }

    /// nil when the file is not a VHD or VHDX image.
    func diskAttributes(_ ino: UInt64) throws(Errno) -> [(name: [UInt8], value: [UInt8])]? {
        guard let chain = try chainFacts(ino) else { return nil }
        return chain.extendedAttributes.map { (Array($0.name.utf8), Array($0.value.utf8)) }
    }

    /// The files below image `ino` in its chain, nearest first, as far as they are found; nil when the file
    /// is not an image.
    func parentFiles(of ino: UInt64) throws(Errno) -> [UInt64]? {
        try chainFacts(ino)?.parentFiles
    }

    func isImage(_ ino: UInt64) throws(Errno) -> Bool {
        let attributes = try service.attributes(ino)
        guard attributes.isRegular else { return false }
        return try layerState(attributes, path: { hostPath(of: ino) }) != .notImage
    }

    private func chainFacts(_ ino: UInt64) throws(Errno) -> DiskChainFacts? {
        let attributes = try service.attributes(ino)
        guard attributes.isRegular else { return nil }
        // Finding the path costs a lookup per directory level: only for images, and once.
        var found: String??
        func path() -> String? {
            if let found { return found }
            let path = hostPath(of: ino)
            found = .some(path)
            return path
        }
        switch try layerState(attributes, path: path) {
        case .notImage:
            return nil
        case .damaged(let format, let message):
            return DiskChainFacts(format: format, damaged: ImageProblem(description: message))
        case .image(var top):
            if let path = path() {
                top.facts.path = path
            } else if top.facts.parent != nil {
                var chain = DiskChainFacts(format: top.facts.format, damaged: ImageProblem(
                    description: "inode \(ino): the image's directory is not known here (no name this node has seen "
                        + "still leads to it), so its parent cannot be looked for"))
                chain.facts = top.facts
                return chain
            }
            return DiskChainFacts(top: top, fileIdentity: ino, namespace: VolumeImageNamespace(disks: self))
        }
    }

    /// Reads the first and last sectors to tell whether the file is an image at all, and parses it only then.
    /// A read of the file that fails is the call's error (EIO), never an answer about the file.
    func layerState(_ attributes: InodeAttributes, path: () -> String?) throws(Errno) -> ImageLayerState {
        try layers.state(attributes) { () throws(Errno) -> ImageLayerState in
            let ino = attributes.ino
            let unnamed = "inode \(ino)"
            let format: ImageFormat
            do {
                let probe = InodeImageStorage(ino: ino, size: attributes.size, path: unnamed, data: data)
                guard let detected = try ImageLayerFacts.detectFormat(probe, path: unnamed), detected != .raw else {
                    return .notImage
                }
                format = detected
            } catch {
                throw Self.readError(error)
            }
            let name = path() ?? unnamed
            let storage = InodeImageStorage(ino: ino, size: attributes.size, path: name, data: data)
            do {
                return .image(try ImageLayerFacts(storage: storage, path: name, format: format))
            } catch {
                if case .io = error as? VHDError { throw Self.readError(error) }
                return .damaged(format, message: Self.message(error))
            }
        }
    }

    /// The errno of a failed read of the file (EIO for anything else that stopped the read).
    private static func readError(_ error: any Error) -> Errno {
        if case .io(_, _, let code)? = error as? VHDError, code != 0 { return Errno(code) }
        return .io
    }

    private static func message(_ error: any Error) -> String {
        (error as? VHDError)?.description ?? String(describing: error)
    }


    // MARK: paths

    /// The file's path on this host (through the mountpoint), when the kernel reached it by a name still true.
    func hostPath(of ino: UInt64) -> String? {
        guard let components = names.path(of: ino, service: service) else { return nil }
        return mountpoint + "/" + components.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
    }

    /// The names below the root for a host path under the mountpoint; nil for a path elsewhere.
    func volumeComponents(of path: String) -> [String]? {
        guard path.hasPrefix(mountpoint + "/") || path == mountpoint else { return nil }
        return path.dropFirst(mountpoint.count).split(separator: "/").map(String.init)
    }
}
