import CSVFS
import Logging
import LockManager

/// The filesystem's part of the coordinator role, driven by the DLM node's role directives: the elected
/// node opens the metadata database before its master (and so its metadata server) starts, and closes it
/// after the master stopped; every other node sends its metadata calls to the coordinator it follows.
final class MetadataRole: RoleHooks {
    private let device: LUNDevice
    private let superblock: Superblock
    private let node: UInt32
    private let service: RoutedMetadataService
    private let logger: Logger

    init(device: LUNDevice, superblock: Superblock, node: UInt32, service: RoutedMetadataService, logger: Logger) {
        self.device = device
        self.superblock = superblock
        self.node = node
        self.service = service
        self.logger = logger
    }

    func willHost(_ leadership: Leadership) async throws {
        // Stamped before the database is opened: from here on, a coordinator of an older epoch that wakes up
        // finds this one on the volume and writes nothing.
        let epoch = try VolumeEpoch.stamp(leadership.epoch, on: device)
        let local = try LocalMetadataService.open(device: device, superblock: superblock, node: node, takingOver: true, epoch: epoch)
        service.host(local)
        logger.info("coordinator for epoch \(leadership.epoch): epoch stamped on the volume, metadata database open")
    }

    func didStop(_ epoch: Epoch) async {
        guard let local = service.unhost() else { return }
        do throws(Errno) {
            try local.commit()
            try local.sync()
        } catch {
            logger.error("closing the metadata database of epoch \(epoch): \(error)")
        }
        local.close()
        logger.info("no longer coordinator (epoch \(epoch)): metadata database closed")
    }

    func follow(_ leader: Leadership?) async {
        service.follow(leader?.epoch)
        if let leader { logger.info("coordinator is node \(leader.node) at \(leader.address), epoch \(leader.epoch)") }
    }
}
