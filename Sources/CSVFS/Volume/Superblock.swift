import Foundation

/// The volume's identity and geometry, kept at the start of the LUN and again at a fixed second place.
public struct Superblock: Sendable, Equatable {
    public static let magic: [UInt8] = Array("CSVFS\u{0}SB".utf8)
    /// 2: the coordination range is recorded.
    public static let version: UInt32 = 2
    public static let size = 4096
    public static let primaryOffset: Int64 = 0
    public static let backupOffset: Int64 = 512 * 1024
    public static let blockSize: UInt32 = 4096
    /// Where `csvfs format` reserves the coordination range (the cluster's `local` backend): in the zeroed
    /// space after the mount claim (8 KiB) and before the backup superblock (512 KiB).
    public static let defaultCoordinationOffset: Int64 = 64 * 1024
    public static let defaultCoordinationLength: Int64 = 64 * 1024

    public var uuid: UUID
    public var volumeSize: Int64
    public var blockSize: UInt32
    public var metadataOffset: Int64
    public var metadataLength: Int64
    public var walCapacity: Int64
    public var dataOffset: Int64
    public var dataLength: Int64
    /// Bytes of the LUN that belong to the cluster's coordination backend (its OFD locks and leader
    /// record); nothing of the filesystem lives there.
    public var coordinationOffset: Int64
    public var coordinationLength: Int64
    /// The epoch of the last coordinator that wrote the volume (the fencing token of the cluster).
    public var epoch: UInt64
    public var createdAt: UInt64
    public var label: String

    public var metadataRegion: MetadataRegion {
        MetadataRegion(offset: metadataOffset, length: metadataLength, walCapacity: walCapacity)
    }

    /// The layout of a new volume of `volumeSize` bytes: the metadata region takes about 1/16 of it
    /// (16 MiB to 8 GiB), the rest is data in 4 KiB blocks.
    public static func layout(volumeSize: Int64, label: String = "") throws(VolumeError) -> Superblock {
        let mib: Int64 = 1 << 20
        guard volumeSize >= 32 * mib else { throw .tooSmall(volumeSize) }
        let metadataOffset = mib
        let metadataLength = min(max(volumeSize / 16 / mib * mib, 16 * mib), 8192 * mib)
        let walCapacity = min(max(metadataLength / 4 / mib * mib, 8 * mib), 256 * mib)
        let dataOffset = metadataOffset + metadataLength
        let dataLength = (volumeSize - dataOffset) / Int64(blockSize) * Int64(blockSize)
        return Superblock(uuid: UUID(), volumeSize: volumeSize, blockSize: blockSize,
                          metadataOffset: metadataOffset, metadataLength: metadataLength, walCapacity: walCapacity,
                          dataOffset: dataOffset, dataLength: dataLength,
                          coordinationOffset: defaultCoordinationOffset, coordinationLength: defaultCoordinationLength, epoch: 0,
                          createdAt: UInt64(Date().timeIntervalSince1970 * 1e9), label: label)
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.size)
        writer.append(Self.magic)
        writer.append(Self.version)
        writer.append(UInt32(0))  // feature flags: none yet
        writer.append(withUnsafeBytes(of: uuid.uuid) { Array($0) })
        writer.append(UInt64(volumeSize))
        writer.append(blockSize)
        writer.append(UInt32(0))
        writer.append(UInt64(metadataOffset))
        writer.append(UInt64(metadataLength))
        writer.append(UInt64(walCapacity))
        writer.append(UInt64(dataOffset))
        writer.append(UInt64(dataLength))
        writer.append(epoch)
        writer.append(createdAt)
        var labelBytes = Array(label.utf8.prefix(63))
        labelBytes += [UInt8](repeating: 0, count: 64 - labelBytes.count)
        writer.append(labelBytes)
        writer.append(UInt64(coordinationOffset))
        writer.append(UInt64(coordinationLength))
        writer.pad(to: Self.size - 4)
        writer.append(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(VolumeError) -> Superblock {
        guard bytes.count == size, Array(bytes[0..<8]) == magic else { throw .notCSVFS }
        let reader = ByteReader(bytes)
        guard CRC32C.checksum(Array(bytes[0..<(size - 4)])) == reader.uint32(at: size - 4) else {
            throw .corruptSuperblock("checksum mismatch")
        }
        let version = reader.uint32(at: 8)
        guard version == Self.version else { throw .corruptSuperblock("unsupported version \(version)") }
        let u = reader.slice(16, 16)
        let uuid = UUID(uuid: (u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]))
        let labelBytes = reader.slice(104, 64).prefix { $0 != 0 }
        let block = Superblock(
            uuid: uuid, volumeSize: Int64(bitPattern: reader.uint64(at: 32)), blockSize: reader.uint32(at: 40),
            metadataOffset: Int64(bitPattern: reader.uint64(at: 48)), metadataLength: Int64(bitPattern: reader.uint64(at: 56)),
            walCapacity: Int64(bitPattern: reader.uint64(at: 64)), dataOffset: Int64(bitPattern: reader.uint64(at: 72)),
            dataLength: Int64(bitPattern: reader.uint64(at: 80)),
            coordinationOffset: Int64(bitPattern: reader.uint64(at: 168)), coordinationLength: Int64(bitPattern: reader.uint64(at: 176)),
            epoch: reader.uint64(at: 88),
            createdAt: reader.uint64(at: 96), label: String(decoding: labelBytes, as: UTF8.self))
        try block.validate()
        return block
    }

    /// Geometry that a checksum cannot vouch for: a valid CRC over nonsense must still not be trusted.
    func validate() throws(VolumeError) {
        let regionsInOrder = metadataOffset >= Self.backupOffset + Int64(Self.size)
            && metadataLength > MetadataRegion.headerSize + MetadataRegion.journalSize + walCapacity && walCapacity > 0
            && dataOffset == metadataOffset + metadataLength
            && dataLength >= 0 && dataOffset + dataLength <= volumeSize
        // The coordination range sits between the primary superblock and the backup, clear of the mount claim.
        let claim = LUNDevice.inUseLockOffset
        let coordinationInPlace = coordinationLength > 0 && coordinationOffset >= Self.primaryOffset + Int64(Self.size)
            && coordinationOffset <= Self.backupOffset - coordinationLength
            && !(coordinationOffset...(coordinationOffset + coordinationLength - 1)).contains(claim)
        guard blockSize == Self.blockSize, regionsInOrder, coordinationInPlace, dataOffset % Int64(blockSize) == 0 else {
            throw .corruptSuperblock("impossible geometry")
        }
    }
}

public enum VolumeError: Error, CustomStringConvertible, Equatable {
    case notCSVFS
    case corruptSuperblock(String)
    case corruptMetadata(String)
    case tooSmall(Int64)
    case truncated(expected: Int64, actual: Int64)
    case alreadyInUse
    case alreadyFormatted
    case io(String, Errno)

    public var description: String {
        switch self {
        case .notCSVFS: return "not a CSVFS volume (no CSVFS superblock at offset 0 or at 512 KiB)"
        case .corruptSuperblock(let why): return "corrupt superblock: \(why)"
        case .corruptMetadata(let why): return "corrupt metadata database: \(why)"
        case .tooSmall(let size): return "volume too small: \(size) bytes (at least 32 MiB)"
        case .truncated(let expected, let actual):
            return "LUN is \(actual) bytes but the superblock says \(expected): truncated or wrong device"
        case .alreadyInUse: return "volume is already mounted or in use by another process"
        case .alreadyFormatted: return "LUN already holds a CSVFS volume (use --force to overwrite it)"
        case .io(let what, let errno): return "\(what): \(errno)"
        }
    }
}
