import Glibc
import Primitives

/// A coordinator's claim on the volume: the epoch it was elected under, written in the superblock when it takes
/// the role, and checked before the first LUN write of each metadata transaction. A coordinator that slept
/// through its successor's election (SIGSTOP, a hung host) finds another epoch there and writes nothing more.
///
/// The check is for identity, not order: the `local` backend counts epochs from 1 and etcd's are revisions, so
/// a volume mounted with one backend after the other may well see a lower epoch win. The election decides who
/// stamps; the lease fence keeps a stale stamp from being written.
public final class VolumeEpoch: Sendable {
    public let epoch: UInt64
    private let device: LUNDevice
    /// One sector for reading the superblock past the page cache: on a LUN shared by hosts, the cached copy
    /// would be this host's own old stamp.
    private let sector = Locked(AlignedBuffer(capacity: Superblock.size))

    private init(epoch: UInt64, device: LUNDevice) {
        self.epoch = epoch
        self.device = device
    }

    /// Takes the volume for `epoch`: both superblock copies name it, flushed, before anything else is written.
    public static func stamp(_ epoch: UInt64, on device: LUNDevice) throws(VolumeError) -> VolumeEpoch {
        var (block, _) = try device.superblock()
        block.epoch = epoch
        try device.writeSuperblock(block)
        return VolumeEpoch(epoch: epoch, device: device)
    }

    /// Refuses (EIO) when the volume names another coordinator's epoch, and then closes the device's fence for
    /// good: this node stepped down, whatever its backend still believes.
    public func verify() throws(Errno) {
        let found = try onVolume()
        guard found != epoch else { return }
        device.fence.close("the volume is coordinated under epoch \(found), this node's epoch \(epoch) is over")
        throw Errno.io
    }

    /// The epoch the primary superblock names, else the backup's.
    func onVolume() throws(Errno) -> UInt64 {
        var lastError = Errno.io
        for offset in [Superblock.primaryOffset, Superblock.backupOffset] {
            do throws(Errno) {
                let bytes = try read(at: offset)
                if let block = try? Superblock.decode(bytes) { return block.epoch }
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    private func read(at offset: Int64) throws(Errno) -> [UInt8] {
        guard let direct = device.direct else { return try device.fd.read(count: Superblock.size, at: offset) }
        return try sector.withLock { (buffer) throws(Errno) -> [UInt8] in
            let n = try direct.read(into: buffer.pointer, count: Superblock.size, at: offset)
            return Array(UnsafeRawBufferPointer(start: buffer.pointer, count: n))
        }
    }
}
