import VHDFormat

/// Finds a differencing image's parent among the volume's own files: the candidate host path is taken
/// apart below the mountpoint and walked by lookups from the root, never opened through the mount.
struct VolumeImageNamespace: ImageNamespace, ImageStorageNamespace {
    let disks: DiskAttributes

    func image(at path: String) throws -> (facts: ImageLayerFacts, fileIdentity: UInt64)? {
        guard let attributes = try regularFile(at: path) else { return nil }
        let state: ImageLayerState
        do {
            state = try disks.layerState(attributes, path: { path })
        } catch {
            throw VHDError.io(path: path, operation: "read", errno: error.code)
        }
        switch state {
        case .notImage: throw VHDError.unrecognizedFormat(path: path)
        case .damaged(_, let message): throw ImageProblem(description: message)
        case .image(var facts):
            facts.facts.path = path
            return (facts, attributes.ino)
        }
    }

    func storage(at path: String) throws -> (storage: any ImageStorage, fileIdentity: UInt64)? {
        guard let attributes = try regularFile(at: path) else { return nil }
        return (InodeImageStorage(ino: attributes.ino, size: attributes.size, path: path, data: disks.data), attributes.ino)
    }

    /// The regular file at host path `path`, nil when there is none (only regular files, as
    /// `VirtualDisk.open`: a symbolic link is not followed here).
    private func regularFile(at path: String) throws -> InodeAttributes? {
        guard let components = disks.volumeComponents(of: path) else { return nil }
        var attributes: InodeAttributes
        do {
            attributes = try disks.service.attributes(MetadataStore.rootInode)
            for component in components {
                attributes = try disks.service.lookup(parent: attributes.ino, name: Array(component.utf8))
            }
        } catch {
            if error == .noEntry || error == .notDirectory || error == .nameTooLong { return nil }
            throw VHDError.io(path: path, operation: "look up", errno: error.code)
        }
        return attributes.isRegular ? attributes : nil
    }
}
