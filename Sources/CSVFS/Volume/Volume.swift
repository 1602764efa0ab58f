import Logging

/// An opened volume on this node: the LUN claimed, the metadata service and the data path ready.
public final class Volume: Sendable {
    public let device: LUNDevice
    public let superblock: Superblock
    /// The metadata store of this volume, on this node.
    public let service: LocalMetadataService
    /// What the FUSE adapter and the data path call: `service` itself.
    public var metadata: any MetadataService { service }
    public let data: DataPath
    /// Set when the primary superblock was unreadable and the backup was used.
    public let usedBackupSuperblock: Bool

    private init(device: LUNDevice, superblock: Superblock, service: LocalMetadataService,
                 data: DataPath, usedBackup: Bool) {
        self.device = device
        self.superblock = superblock
        self.service = service
        self.data = data
        self.usedBackupSuperblock = usedBackup
    }

    /// Opens the volume for this process alone (a cluster node joins with `ClusterNode.join` instead). A volume
    /// another process has open is refused. `io` picks how file data moves to and from the LUN.
    public static func open(path: String, io: LUNIOMode = .aio) throws -> Volume {
        let device = try LUNDevice.open(path)
        do {
            try device.claimExclusive()
            let (superblock, copy) = try device.superblock()
            let service = try LocalMetadataService.open(device: device, superblock: superblock)
            let data: DataPath
            do {
                data = try DataPath(service: service, device: device, io: io)
            } catch {
                service.close()
                throw error
            }
            return Volume(device: device, superblock: superblock, service: service, data: data, usedBackup: copy == .backup)
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
