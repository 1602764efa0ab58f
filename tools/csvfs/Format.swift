import ArgumentParser
import CSVFS
import CSVFSCluster

struct Format: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Format a LUN (block device or image file) as a CSVFS volume.")

    @Argument(help: "The LUN: a block device, or an image file (created when missing).")
    var lun: String

    @Option(help: "Size of the image file, e.g. 512M, 20G (default: the LUN's current size).")
    var size: String?

    @Option(help: "A label for the volume (up to 63 bytes).")
    var label: String = ""

    @Flag(help: "Overwrite a LUN that already holds a CSVFS volume.")
    var force = false

    @Option(help: "Where to write the new volume's cluster secret (default: /etc/csvfs/VOLUME-UUID.secret). Copy it to every host that mounts the volume.")
    var secretFile: String?

    func run() throws {
        var bytes: Int64?
        if let size {
            guard let parsed = ByteSize.parse(size) else { throw ValidationError("invalid size '\(size)' (try 512M or 20G)") }
            bytes = parsed
        }
        let superblock: Superblock
        do {
            superblock = try VolumeFormatter.format(path: lun, size: bytes, force: force, label: label)
        } catch let error as VolumeError {
            throw Failure("csvfs format: \(lun): \(error)")
        }
        print("formatted \(lun): CSVFS volume \(superblock.uuid.uuidString.lowercased()), \(ByteSize.format(superblock.volumeSize)), "
              + "\(ByteSize.format(superblock.dataLength)) for data, \(ByteSize.format(superblock.metadataLength)) for metadata")
        let secretPath = secretFile ?? ClusterSecretFile.defaultPath(volume: superblock.uuid)
        do {
            _ = try ClusterSecretFile.create(at: secretPath)
        } catch {
            throw Failure("csvfs format: \(lun): the volume is formatted, but \(error)")
        }
        print("cluster secret: \(secretPath) (copy it, mode 0600, to every host that mounts this volume)")
    }
}
