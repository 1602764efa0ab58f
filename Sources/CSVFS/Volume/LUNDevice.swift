import Glibc
import Primitives

/// The shared LUN: a block device, or an image file standing in for one.
public struct LUNDevice: Sendable {
    public let path: String
    /// Buffered descriptor: metadata and unaligned data.
    public let fd: FileDescriptor
    /// O_DIRECT descriptor for aligned data, so no host serves another's stale bytes from its page cache;
    /// nil where the medium has no O_DIRECT (tmpfs).
    public let direct: FileDescriptor?
    /// Admits this process's writes to the LUN while its node's lease holds (see `WriteFence`); both
    /// descriptors write through it.
    public let fence: WriteFence

    init(path: String, fd: FileDescriptor, direct: FileDescriptor?, fence: WriteFence = WriteFence()) {
        self.path = path
        self.fd = fd
        self.direct = direct
        self.fence = fence
    }

    /// A byte of the LUN that is locked while a process has the volume open: a write lock by a process that
    /// has it alone (a check, a repair), a read lock by every node of a mounted cluster.
    static let inUseLockOffset: Int64 = 8192

    /// `readOnly` opens for reading only (a check, `info`): a read-only image, loop device or mount will do,
    /// and nothing can be written through it by mistake.
    public static func open(_ path: String, create: Bool = false, readOnly: Bool = false) throws(VolumeError) -> LUNDevice {
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(path, readOnly ? O_RDONLY : O_RDWR | (create ? O_CREAT : 0))
        } catch {
            throw .io("cannot open \(path)", error)
        }
        LUNWriteRecorder.shared?.watch(fd.rawValue)
        let fence = WriteFence()
        return LUNDevice(path: path, fd: fd.fenced(by: fence), direct: readOnly ? nil : FileDescriptor.openDirect(path, O_RDWR)?.fenced(by: fence),
                         fence: fence)
    }

    public func close() {
        direct?.close()
        fd.close()
    }

    /// Claims the LUN for this process; the kernel drops the claim the instant the process dies.
    public func claimExclusive() throws(VolumeError) { try claim(shared: false) }

    /// Claims the LUN as one node of the cluster: any number of nodes hold the claim together, and it refuses
    /// (and is refused by) a process that has the volume alone, such as `fsck --repair`.
    public func claimShared() throws(VolumeError) { try claim(shared: true) }

    private func claim(shared: Bool) throws(VolumeError) {
        let byte = Self.inUseLockOffset..<(Self.inUseLockOffset + 1)
        let claimed: Bool
        do {
            claimed = shared ? try OFDLock.tryReadLock(fd.rawValue, byte) : try OFDLock.tryWriteLock(fd.rawValue, byte)
        } catch {
            throw .io("cannot lock \(path)", Errno(error.code))
        }
        if !claimed { throw .alreadyInUse }
    }

    public func size() throws(VolumeError) -> Int64 {
        do { return try fd.size() } catch { throw .io("cannot size \(path)", error) }
    }

    public enum SuperblockCopy: Sendable { case primary, backup }

    /// Both superblock copies as found: each valid, or why not.
    public func readSuperblocks() -> (primary: Result<Superblock, VolumeError>, backup: Result<Superblock, VolumeError>) {
        func read(_ offset: Int64) -> Result<Superblock, VolumeError> {
            do {
                return .success(try Superblock.decode(try fd.read(count: Superblock.size, at: offset)))
            } catch let error as VolumeError {
                return .failure(error)
            } catch {
                return .failure(.io("cannot read superblock", error as? Errno ?? .io))
            }
        }
        return (read(Superblock.primaryOffset), read(Superblock.backupOffset))
    }

    /// The superblock to trust: the primary, else the backup. Either must fit the LUN.
    public func superblock() throws(VolumeError) -> (Superblock, from: SuperblockCopy) {
        let (primary, backup) = readSuperblocks()
        let chosen: (Superblock, SuperblockCopy)
        switch (primary, backup) {
        case (.success(let block), _): chosen = (block, .primary)
        case (.failure, .success(let block)): chosen = (block, .backup)
        case (.failure(.notCSVFS), .failure(.notCSVFS)):
            if hasMetadataRegion() {
                throw .corruptSuperblock("both copies are gone, but CSVFS metadata is still at 1 MiB: the volume was overwritten at its start")
            }
            throw .notCSVFS
        case (.failure(let error), .failure(.notCSVFS)): throw error
        case (.failure, .failure(let error)): throw error
        }
        let actual = try size()
        if actual < chosen.0.volumeSize { throw .truncated(expected: chosen.0.volumeSize, actual: actual) }
        return chosen
    }

    /// Whether the metadata region's header sits where every CSVFS layout puts it.
    private func hasMetadataRegion() -> Bool {
        let magic = (try? fd.read(count: 8, at: 1 << 20)) ?? []
        return magic == Array("CSVFSMDR".utf8)
    }

    public func writeSuperblock(_ block: Superblock, copies: [SuperblockCopy] = [.backup, .primary]) throws(VolumeError) {
        do {
            for copy in copies {
                try fd.write(block.encoded(), at: copy == .primary ? Superblock.primaryOffset : Superblock.backupOffset)
            }
            try fd.dataSync()
        } catch {
            throw .io("cannot write superblock", error)
        }
    }
}
