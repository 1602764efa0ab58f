import Glibc

/// Makes a new, empty CSVFS volume on a LUN.
public enum VolumeFormatter {
    /// Formats `path`; creates the image file (of `size` bytes) when it does not exist.
    /// Refuses a LUN that already holds a CSVFS volume unless `force`, and one that is in use.
    @discardableResult
    public static func format(path: String, size: Int64?, force: Bool, label: String = "") throws -> Superblock {
        let existed = access(path, F_OK) == 0
        let device = try LUNDevice.open(path, create: true)
        defer { device.close() }
        try device.claimExclusive()
        if existed && !force, (try? device.superblock()) != nil { throw VolumeError.alreadyFormatted }
        var volumeSize = try device.size()
        if let size, !device.fd.isBlockDevice() {
            if size < volumeSize && existed && !force {
                throw VolumeError.io("refusing to shrink existing file \(path) from \(volumeSize) to \(size) bytes without --force", .invalid)
            }
            if ftruncate(device.fd.rawValue, off_t(size)) != 0 { throw VolumeError.io("cannot size \(path)", .current) }
            volumeSize = size
        } else if let size {
            guard size <= volumeSize else { throw VolumeError.io("device \(path) holds only \(volumeSize) bytes", .invalid) }
            volumeSize = size
        }
        let superblock = try Superblock.layout(volumeSize: volumeSize, label: label)
        // Old superblocks go first, so a crash mid-format never leaves a volume that looks valid.
        let zeros = [UInt8](repeating: 0, count: Int(superblock.metadataOffset))
        try device.fd.write(zeros, at: 0)
        let store = try MetadataStore.format(lun: device.fd, superblock: superblock, rootOwner: Caller(uid: getuid(), gid: getgid()))
        store.close()
        // The superblocks are written last: they are the commit point of the format.
        try device.writeSuperblock(superblock)
        return superblock
    }
}
