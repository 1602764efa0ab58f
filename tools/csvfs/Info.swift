import ArgumentParser
import CSVFS
import Foundation

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a CSVFS volume's facts.")

    @Argument(help: "The LUN holding the volume.")
    var lun: String

    func run() throws {
        do {
            let device = try LUNDevice.open(lun, readOnly: true)
            defer { device.close() }
            let (superblock, copy) = try device.superblock()
            let created = Date(timeIntervalSince1970: Double(superblock.createdAt) / 1e9)
            print("""
                volume:      \(superblock.uuid.uuidString.lowercased())\(superblock.label.isEmpty ? "" : " (\(superblock.label))")
                size:        \(ByteSize.format(superblock.volumeSize)) (\(superblock.volumeSize) bytes)
                block size:  \(superblock.blockSize)
                metadata:    \(ByteSize.format(superblock.metadataLength)) at \(superblock.metadataOffset) (WAL \(ByteSize.format(superblock.walCapacity)))
                data:        \(ByteSize.format(superblock.dataLength)) at \(superblock.dataOffset)
                coordination: \(superblock.coordinationOffset)+\(superblock.coordinationLength) (dlmtool --region)
                epoch:       \(superblock.epoch)
                created:     \(created)
                superblock:  \(copy == .primary ? "primary" : "backup (primary unreadable: run csvfs fsck --repair)")
                in use:      \(VolumeUsage.isInUse(path: lun) ? "yes (mounted)" : "no")
                """)
        } catch {
            throw Failure("csvfs info: \(lun): \(error)")
        }
    }
}
