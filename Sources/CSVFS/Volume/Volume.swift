import Logging

/// An opened volume on this node: the LUN claimed, the metadata service and the data path ready.
public final class Volume: Sendable {
    public let device: LUNDevice
    public let superblock: Superblock
    public let service: LocalMetadataService
    public let data: DataPath
    /// Set when the primary superblock was unreadable and the backup was used.
    public let usedBackupSuperblock: Bool

    private init(device: LUNDevice, superblock: Superblock, service: LocalMetadataService, data: DataPath, usedBackup: Bool) {
        self.device = device
        self.superblock = superblock
        self.service = service
        self.data = data
        self.usedBackupSuperblock = usedBackup
    }

    /// Opens the volume for this process alone. A volume another process has open is refused.
    /// `io` picks how file data moves to and from the LUN.
    public static func open(path: String, io: LUNIOMode = .aio) throws -> Volume {
        let device = try LUNDevice.open(path)
        do {
            try device.claimExclusive()
            let (superblock, copy) = try device.superblock()
            let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
            try store.reclaimOrphans()
            let service = LocalMetadataService(store: store, lun: device.fd)
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
