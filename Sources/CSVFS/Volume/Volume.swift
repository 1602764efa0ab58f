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

    private init(device: LUNDevice, superblock: Superblock, service: LocalMetadataService, route: MetadataRoute,
                 usedBackup: Bool) {
        self.device = device
        self.superblock = superblock
        self.service = service
        self.usedBackupSuperblock = usedBackup
        switch route {
        case .direct:
            remote = nil
            metadata = service
        case .loopbackRPC:
            let remote = RemoteMetadataService(channel: LoopbackMetadataChannel(server: MetadataServer(service: service)),
                                               node: 1)
            self.remote = remote
            metadata = remote
        }
        data = DataPath(service: metadata, device: device)
    }

    /// Opens the volume for this process alone. A volume another process has open is refused.
    public static func open(path: String, metadataRoute: MetadataRoute = .direct) throws -> Volume {
        let device = try LUNDevice.open(path)
        do {
            try device.claimExclusive()
            let (superblock, copy) = try device.superblock()
            let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
            try store.reclaimOrphans()
            return Volume(device: device, superblock: superblock, service: LocalMetadataService(store: store, lun: device.fd),
                          route: metadataRoute, usedBackup: copy == .backup)
        } catch {
            device.close()
            throw error
        }
    }

    /// Commits, checkpoints and releases the LUN.
    public func close() {
        try? service.commit()
        service.close()
        try? device.fd.dataSync()
        device.close()
    }
}
