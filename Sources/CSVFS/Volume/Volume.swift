import Logging

/// How the FUSE adapter and the data path of this node reach the metadata.
public enum MetadataRoute: Sendable, Equatable {
    /// Straight to the local service.
    case direct
    /// Through `RemoteMetadataService`, the codec and a `MetadataServer` in this process, as a node that is not
    /// the coordinator reaches it (everything but the network).
    case loopbackRPC
}

/// An opened volume on this node: the LUN claimed, the metadata service and the data path ready.
public final class Volume: Sendable {
    public let device: LUNDevice
    public let superblock: Superblock
    /// The metadata store of this volume, on this node.
    public let service: LocalMetadataService
    /// What the FUSE adapter and the data path call: `service` itself, or `remote` on the way to it.
    public let metadata: any MetadataService
    /// Set for `MetadataRoute.loopbackRPC`: its counters tell how many RPCs the mount made.
    public let remote: RemoteMetadataService?
    public let data: DataPath
    /// Set when the primary superblock was unreadable and the backup was used.
    public let usedBackupSuperblock: Bool

    private init(device: LUNDevice, superblock: Superblock, service: LocalMetadataService,
                 metadata: any MetadataService, remote: RemoteMetadataService?, data: DataPath, usedBackup: Bool) {
        self.device = device
        self.superblock = superblock
        self.service = service
        self.metadata = metadata
        self.remote = remote
        self.data = data
        self.usedBackupSuperblock = usedBackup
    }

    /// Opens the volume for this process alone. A volume another process has open is refused.
    /// `io` picks how file data moves to and from the LUN; `metadataRoute`, how FUSE and the data path reach the metadata.
    public static func open(path: String, io: LUNIOMode = .aio, metadataRoute: MetadataRoute = .direct) throws -> Volume {
        let device = try LUNDevice.open(path)
        do {
            try device.claimExclusive()
            let (superblock, copy) = try device.superblock()
            let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
            try store.reclaimOrphans()
            let service = LocalMetadataService(store: store, lun: device.fd)
            let remote: RemoteMetadataService? = switch metadataRoute {
            case .direct: nil
            case .loopbackRPC: RemoteMetadataService(channel: LoopbackMetadataChannel(server: MetadataServer(service: service)), node: 1)
            }
            let metadata: any MetadataService = remote ?? service
            let data: DataPath
            do {
                data = try DataPath(service: metadata, device: device, io: io)
            } catch {
                service.close()
                throw error
            }
            return Volume(device: device, superblock: superblock, service: service, metadata: metadata, remote: remote,
                          data: data, usedBackup: copy == .backup)
        } catch {
            device.close()
            throw error
        }
    }

    /// Commits, checkpoints and releases the LUN.
    public func close() {
        data.close()
        try? service.commit()
        service.close()
        try? device.fd.dataSync()
        device.close()
    }
}
