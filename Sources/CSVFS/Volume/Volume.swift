import Logging

/// An opened volume on this node: the LUN claimed, the metadata service and the data path ready.
public final class Volume: Sendable {
    public let device: LUNDevice
    public let superblock: Superblock
    public let service: LocalMetadataService
    public let data: DataPath
    /// Set when the primary superblock was unreadable and the backup was used.
    public let usedBackupSuperblock: Bool

    private init(device: LUNDevice, superblock: Superblock, service: LocalMetadataService, usedBackup: Bool) {
        self.device = device
        self.superblock = superblock
        self.service = service
        self.usedBackupSuperblock = usedBackup
        data = DataPath(service: service, device: device)
    }

    /// Opens the volume for this process alone. A volume another process has open is refused.
    public static func open(path: String) throws -> Volume {
        let device = try LUNDevice.open(path)
        do {
            try device.claimExclusive()
            let (superblock, copy) = try device.superblock()
            let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
            try store.reclaimOrphans()
            return Volume(device: device, superblock: superblock,
                          service: LocalMetadataService(store: store, lun: device.fd), usedBackup: copy == .backup)
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
