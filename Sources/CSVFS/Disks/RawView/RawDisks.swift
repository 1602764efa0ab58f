import Glibc
import Logging
import Primitives
import VHDFormat

/// The raw views of VM disks this node has open: one `VirtualDisk` per disk, shared by every handle on it,
/// opened only while the node holds the disk's ownership (shared to read, exclusive to write) and flushed
/// and closed before the node lets the ownership go. Writes go into the top image through VHDFormat, so the
/// file stays a valid image that other tools read.
final class RawDisks: Sendable {
    /// One disk with handles on this node.
    private final class OpenDisk: @unchecked Sendable {
        // @unchecked: `disk` and `flushError` are reached only under `structure`, `handles` only under
        // `RawDisks.open`'s lock. The disk's `readData`/`writeData` run outside `structure`, under the gate
        // shared, which keeps `close` away (it takes the gate exclusive).
        let structure = Lock()
        var disk: VirtualDisk?
        var handles = 0
        /// A flush that failed when the ownership went: the next fsync says so (once), so no error is lost.
        var flushError: Errno?
    }

    private let service: any MetadataService
    private let data: DataPath
    private let disks: DiskAttributes
    private let ownership: any DiskOwnership
    private let logger: Logger
    /// Held shared by every read and write in flight on a disk, exclusive while its image is flushed and closed.
    private let gate = InodeLocks()
    private let open = Locked<[UInt64: OpenDisk]>([:])

    init(service: any MetadataService, data: DataPath, disks: DiskAttributes, ownership: any DiskOwnership, logger: Logger) {
        self.service = service
        self.data = data
        self.disks = disks
        self.ownership = ownership
        self.logger = logger
        ownership.onRevoke { [weak self] ino in self?.letGo(ino) }
    }

    // MARK: handles

    /// A handle opened on the raw view of image `ino`. The chain is opened here, so a damaged image or a
    /// missing parent fails the open (EIO, and the log names the problem).
    func opened(_ ino: UInt64) throws(Errno) {
        open.withLock { open in
            let entry = open[ino] ?? OpenDisk()
            entry.handles += 1
            open[ino] = entry
        }
        do {
            _ = try withDisk(ino, exclusive: false) { disk, _ in disk.virtualSize }
        } catch {
            released(ino)
            throw error
        }
    }

    /// The last handle's release flushes and closes the image and gives the ownership back.
    func released(_ ino: UInt64) {
        let last = open.withLock { open -> OpenDisk? in
            guard let entry = open[ino] else { return nil }
            entry.handles -= 1
            guard entry.handles == 0 else { return nil }
            open[ino] = nil
            return entry
        }
        guard let last else { return }
        // A handle opened meanwhile has a new entry; it waits at the gate, then finds the ownership gone and asks again.
        gate.withExclusive(ino) {
            close(ino, last)
            ownership.release(ino)
        }
    }

    /// The virtual size of disk `ino` when this node has it open, nil otherwise.
    func virtualSize(_ ino: UInt64) -> UInt64? {
        guard let entry = open.withLock({ $0[ino] }) else { return nil }
        return entry.structure.withLock { entry.disk?.virtualSize }
    }

    // MARK: I/O

    /// Up to `count` bytes at `offset` of the flattened disk (fewer at its end).
    func read(_ ino: UInt64, offset: UInt64, count: Int) throws(Errno) -> [UInt8] {
        try withDisk(ino, exclusive: false) { (disk, entry) throws(Errno) -> [UInt8] in
            guard offset < disk.virtualSize, count > 0 else { return [] }
            let total = min(UInt64(count), disk.virtualSize - offset)
            // Where each part lies is asked under the structure lock; the reads run outside it, beside other I/O.
            let pieces = try entry.structure.withLock { () throws(Errno) -> [(start: UInt64, length: UInt64, source: VirtualDisk.Source)] in
                var pieces: [(start: UInt64, length: UInt64, source: VirtualDisk.Source)] = []
                var done: UInt64 = 0
                while done < total {
                    let (length, source) = try imageCall(ino) { try disk.resolve(at: offset + done, limit: total - done) }
                    pieces.append((done, length, source))
                    done += length
                }
                return pieces
            }
            var bytes = [UInt8](repeating: 0, count: Int(total))
            let failure = bytes.withUnsafeMutableBytes { buffer -> Errno? in
                do throws(Errno) {
                    for piece in pieces {
                        guard case .data(let depth, let fileOffset) = piece.source else { continue }
                        let part = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(piece.start)..<Int(piece.start + piece.length)])
                        try imageCall(ino) { try disk.readData(depth: depth, at: fileOffset, into: part) }
                    }
                    return nil
                } catch {
                    return error
                }
            }
            if let failure { throw failure }
            return bytes
        }
    }

    /// Writes at `offset` of the disk; answers how many bytes it took (fewer than given at the disk's end).
    func write(_ ino: UInt64, offset: UInt64, bytes: UnsafeRawBufferPointer) throws(Errno) -> Int {
        try withDisk(ino, exclusive: true) { (disk, entry) throws(Errno) -> Int in
            // As a block device: nothing past the end, and a write that crosses it is cut short there.
            guard offset < disk.virtualSize else { throw Errno.noSpace }
            let count = Int(min(UInt64(bytes.count), disk.virtualSize - offset))
            guard count > 0 else { return 0 }
            let part = UnsafeRawBufferPointer(rebasing: bytes[0..<count])
            // Data the image already holds is overwritten in place, outside the structure lock, so writes run in
            // parallel; a write that allocates or copies from a parent changes the image's tables, under it.
            let target = try entry.structure.withLock { () throws(Errno) -> UInt64? in
                try imageCall(ino) { try disk.overwriteTarget(at: offset, length: UInt64(count)) }
            }
            if let target {
                try imageCall(ino) { try disk.writeData(at: target, from: part) }
            } else {
                try entry.structure.withLock { () throws(Errno) in
                    try imageCall(ino) { try disk.write(at: offset, from: part) }
                }
            }
            return count
        }
    }

    /// fsync: the image's tables and data made durable and its write session finished (a VHDX's log is
    /// emptied), so the file on the LUN is a valid image for every tool. The next write starts a new session.
    func flush(_ ino: UInt64) throws(Errno) {
        guard let entry = open.withLock({ $0[ino] }) else { return }
        gate.withExclusive(ino) { close(ino, entry, onlyWritable: true) }
        let failed = entry.structure.withLock { () -> Errno? in
            defer { entry.flushError = nil }
            return entry.flushError
        }
        if let failed { throw failed }
    }

    /// SEEK_DATA / SEEK_HOLE over the flattened disk: data is what some image of the chain holds.
    func seek(_ ino: UInt64, from offset: UInt64, data wantData: Bool) throws(Errno) -> UInt64 {
        try withDisk(ino, exclusive: false) { (disk, entry) throws(Errno) -> UInt64 in
            let size = disk.virtualSize
            guard offset < size else { throw Errno(ENXIO) }
            return try entry.structure.withLock { () throws(Errno) -> UInt64 in
                var position = offset
                while position < size {
                    let (length, source) = try imageCall(ino) { try disk.resolve(at: position, limit: size - position) }
                    let isData = source != .zero
                    if isData == wantData { return position }
                    position += length
                }
                if wantData { throw Errno(ENXIO) }
                return size
            }
        }
    }

    /// A write to image `ino` through the file itself: like a write through its raw view it needs the
    /// disk's ownership, exclusive, and what this node keeps of the image's tables is flushed and forgotten
    /// first (the write may change what they describe).
    func withFileWrite<R>(_ ino: UInt64, _ write: () throws(Errno) -> R) throws(Errno) -> R {
        if let entry = open.withLock({ $0[ino] }) { gate.withExclusive(ino) { close(ino, entry) } }
        while true {
            if ownership.holds(ino, exclusive: false), !ownership.holds(ino, exclusive: true) { letGo(ino) }
            try ownership.acquire(ino, exclusive: true)
            gate.lockShared(ino)
            defer { gate.unlockShared(ino) }
            guard ownership.holds(ino, exclusive: true) else { continue }
            return try write()
        }
    }

    /// A handle that wrote image `ino` through the file itself closed: unless raw-view handles of this node
    /// use the disk, its ownership goes now (nothing is kept of it to flush), so the disk shows no owner.
    func fileWriterClosed(_ ino: UInt64) {
        if open.withLock({ $0[ino] }) == nil, ownership.holds(ino, exclusive: false) { letGo(ino) }
    }

    // MARK: ownership

    /// Runs `body` with the disk's image, opened for writing when `exclusive`, while this node holds the
    /// ownership in that mode and keeps it (nothing closes the image while `body` runs).
    private func withDisk<R>(_ ino: UInt64, exclusive: Bool,
                             _ body: (VirtualDisk, OpenDisk) throws(Errno) -> R) throws(Errno) -> R {
        guard let entry = open.withLock({ $0[ino] }) else { throw Errno(EBADF) }
        while true {
            // Shared does not become exclusive in place: two nodes trying it at once would wait on each other.
            if exclusive, ownership.holds(ino, exclusive: false), !ownership.holds(ino, exclusive: true) {
                letGo(ino)
            }
            try ownership.acquire(ino, exclusive: exclusive)
            gate.lockShared(ino)
            defer { gate.unlockShared(ino) }
            // Lost between the grant and the gate (another node asked; then the image is closed already), or
            // lost outright (fenced: then nothing more may be written, and the next fsync says so): ask again.
            guard ownership.holds(ino, exclusive: exclusive) else {
                entry.structure.withLock {
                    guard let disk = entry.disk, !ownership.holds(ino, exclusive: false) else { return }
                    disk.discard()
                    entry.disk = nil
                    if disk.writable {
                        logger.error("the ownership of \(disks.hostPath(of: ino) ?? "inode \(ino)") was lost before its writes were flushed")
                        entry.flushError = .io
                    }
                }
                continue
            }
            let disk = try entry.structure.withLock { () throws(Errno) -> VirtualDisk in
                try opened(ino, entry, writable: exclusive)
            }
            return try body(disk, entry)
        }
    }

    /// Another node wants the disk, or this one wants it exclusive: the image is flushed and closed once no
    /// I/O is in flight on it, then the ownership goes.
    private func letGo(_ ino: UInt64) {
        gate.withExclusive(ino) {
            if let entry = open.withLock({ $0[ino] }) { close(ino, entry) }
            ownership.release(ino)
        }
    }

    /// Under the gate exclusive.
    private func close(_ ino: UInt64, _ entry: OpenDisk, onlyWritable: Bool = false) {
        entry.structure.withLock {
            guard let disk = entry.disk, disk.writable || !onlyWritable else { return }
            entry.disk = nil
            do {
                try disk.close()
            } catch {
                logger.error("flushing the disk \(disks.hostPath(of: ino) ?? "inode \(ino)") failed: \(Self.message(error))")
                entry.flushError = Self.errno(error)
            }
        }
    }

    /// Under the structure lock: the image, opened (again) if it is not, or not for writing when that is needed.
    private func opened(_ ino: UInt64, _ entry: OpenDisk, writable: Bool) throws(Errno) -> VirtualDisk {
        if let disk = entry.disk, disk.writable || !writable { return disk }
        // A read-only open has nothing to flush; readers still holding it finish with it.
        entry.disk = nil
        let attributes = try service.attributes(ino)
        let path = disks.hostPath(of: ino) ?? "inode \(ino)"
        let storage = InodeImageStorage(ino: ino, size: attributes.size, path: path, data: data,
                                        writer: writable ? service : nil)
        let disk = try imageCall(ino) {
            try VirtualDisk.open(storage: storage, path: path, fileIdentity: ino, parents: VolumeImageNamespace(disks: disks))
        }
        entry.disk = disk
        return disk
    }

    /// Runs a VHDFormat call; a failure is logged with what VHDFormat says and answered as an errno: the
    /// LUN's own error for a failed read or write, EIO for a damaged image or a missing parent.
    private func imageCall<R>(_ ino: UInt64, _ call: () throws -> R) throws(Errno) -> R {
        do {
            return try call()
        } catch let error as Errno {
            throw error
        } catch {
            logger.error("raw view of \(disks.hostPath(of: ino) ?? "inode \(ino)"): \(Self.message(error))")
            throw Self.errno(error)
        }
    }

    private static func errno(_ error: any Error) -> Errno {
        if case .io(_, _, let code)? = error as? VHDError, code != 0 { return Errno(code) }
        return .io
    }

    private static func message(_ error: any Error) -> String {
        (error as? VHDError)?.description ?? String(describing: error)
    }
}
