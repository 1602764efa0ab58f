import CSQLite
import Glibc

/// SQLite's extended I/O error codes are macros Swift cannot import.
private let SQLITE_IOERR_READ = SQLITE_IOERR | (1 << 8)
private let SQLITE_IOERR_SHORT_READ = SQLITE_IOERR | (2 << 8)
private let SQLITE_IOERR_WRITE = SQLITE_IOERR | (3 << 8)
private let SQLITE_IOERR_FSYNC = SQLITE_IOERR | (4 << 8)

/// Where the metadata database and its write-ahead log live inside the metadata region of the LUN.
public struct MetadataRegion: Sendable, Equatable {
    /// A small header holding the current byte length of each SQLite file, so the files can shrink and grow
    /// inside their fixed ranges as SQLite expects of files.
    public var headerOffset: Int64
    /// SQLite's rollback journal: used only while a new database switches itself to WAL at format time.
    public var journalOffset: Int64
    public var journalCapacity: Int64
    public var walOffset: Int64
    public var walCapacity: Int64
    public var databaseOffset: Int64
    public var databaseCapacity: Int64

    public static let headerSize: Int64 = 4096
    public static let journalSize: Int64 = 1 << 20

    public init(offset: Int64, length: Int64, walCapacity: Int64) {
        headerOffset = offset
        journalOffset = offset + Self.headerSize
        journalCapacity = Self.journalSize
        walOffset = journalOffset + journalCapacity
        self.walCapacity = walCapacity
        databaseOffset = walOffset + walCapacity
        databaseCapacity = length - Self.headerSize - Self.journalSize - walCapacity
    }
}

/// A custom SQLite VFS that maps the database file and its WAL onto fixed byte ranges of the LUN.
///
/// Only one process opens the database (the mount holds an exclusive lock on the LUN, and SQLite runs in
/// exclusive locking mode), so file locks are no-ops and the WAL index lives in heap memory: no shared memory
/// methods are needed. Each VFS instance is registered under its own name for the life of one connection.
final class LUNVirtualFileSystem: @unchecked Sendable {
    // @unchecked: the raw SQLite structures are written once in init and only read afterwards;
    // the mutable file lengths are behind a lock.
    enum FileKind: Int { case database = 0, wal = 1, journal = 2 }

    /// The current byte length of each file, by `FileKind`.
    struct Lengths: Equatable {
        var values: [Int64] = [0, 0, 0]
        subscript(kind: FileKind) -> Int64 {
            get { values[kind.rawValue] }
            set { values[kind.rawValue] = newValue }
        }
    }

    let name: String
    let lun: FileDescriptor
    let region: MetadataRegion
    /// Refuses every write, and tells SQLite the files are read-only, so it neither recovers into nor
    /// checkpoints the LUN (fsck without --repair).
    let readOnly: Bool
    /// The coordinator's epoch, checked on the LUN before the first write of each transaction (and of each
    /// checkpoint); nil when no cluster elected this writer (format, fsck, a single mount).
    let epoch: VolumeEpoch?
    /// Whether the epoch was checked since the last commit was written out or the last sync.
    private let epochVerified = Locked(false)
    private let lengths: Locked<Lengths>
    private let pendingLog: Locked<PendingLogWrites>
    private let vfs: UnsafeMutablePointer<sqlite3_vfs>
    fileprivate let ioMethods: UnsafeMutablePointer<sqlite3_io_methods>
    private let zName: UnsafeMutablePointer<CChar>
    /// Our file structure: SQLite's `sqlite3_file` followed by the owning VFS object and the file kind.
    private static let ownerOffset = MemoryLayout<sqlite3_file>.stride
    private static let kindOffset = ownerOffset + MemoryLayout<UnsafeRawPointer>.stride
    private static let fileStructSize = kindOffset + MemoryLayout<Int>.stride

    private static let walGrowth: Int64 = 1 << 20
    private static let headerMagic: [UInt8] = Array("CSVFSMDR".utf8)

    init(name: String, lun: FileDescriptor, region: MetadataRegion, readOnly: Bool = false, epoch: VolumeEpoch? = nil) throws(Errno) {
        self.name = name
        self.epoch = epoch
        self.lun = lun
        self.region = region
        self.readOnly = readOnly
        lengths = Locked(try Self.readHeader(lun: lun, region: region))
        pendingLog = Locked(PendingLogWrites(logStart: region.walOffset))
        zName = strdup(name)
        ioMethods = .allocate(capacity: 1)
        ioMethods.initialize(to: Self.makeIOMethods())
        vfs = .allocate(capacity: 1)
        let base = sqlite3_vfs_find(nil)!.pointee
        vfs.initialize(to: sqlite3_vfs())
        vfs.pointee.iVersion = 2
        vfs.pointee.szOsFile = Int32(Self.fileStructSize)
        vfs.pointee.mxPathname = 512
        vfs.pointee.zName = UnsafePointer(zName)
        vfs.pointee.pAppData = Unmanaged.passUnretained(self).toOpaque()
        vfs.pointee.xOpen = { vfsPointer, name, file, flags, outFlags in
            LUNVirtualFileSystem.from(vfsPointer).open(name: name, file: file, flags: flags, outFlags: outFlags)
        }
        vfs.pointee.xDelete = { vfsPointer, name, _ in
            LUNVirtualFileSystem.from(vfsPointer).delete(name: name)
        }
        vfs.pointee.xAccess = { vfsPointer, name, _, result in
            result?.pointee = LUNVirtualFileSystem.from(vfsPointer).exists(name: name) ? 1 : 0
            return SQLITE_OK
        }
        vfs.pointee.xFullPathname = { _, name, count, out in
            guard let name, let out else { return SQLITE_CANTOPEN }
            let length = strlen(name)
            if length + 1 > Int(count) { return SQLITE_CANTOPEN }
            memcpy(out, name, length + 1)
            return SQLITE_OK
        }
        // Time, randomness and sleeping come from the default VFS.
        vfs.pointee.xRandomness = base.xRandomness
        vfs.pointee.xSleep = base.xSleep
        vfs.pointee.xCurrentTime = base.xCurrentTime
        vfs.pointee.xGetLastError = base.xGetLastError
        vfs.pointee.xCurrentTimeInt64 = base.xCurrentTimeInt64
        let rc = sqlite3_vfs_register(vfs, 0)
        if rc != SQLITE_OK { throw Errno.io }
    }

    deinit {
        sqlite3_vfs_unregister(vfs)
        vfs.deallocate()
        ioMethods.deallocate()
        free(zName)
    }

    fileprivate static func from(_ vfs: UnsafeMutablePointer<sqlite3_vfs>?) -> LUNVirtualFileSystem {
        Unmanaged<LUNVirtualFileSystem>.fromOpaque(vfs!.pointee.pAppData).takeUnretainedValue()
    }

    fileprivate static func from(file: UnsafeMutablePointer<sqlite3_file>?) -> (LUNVirtualFileSystem, FileKind) {
        let raw = UnsafeMutableRawPointer(file!)
        let owner = raw.load(fromByteOffset: ownerOffset, as: UnsafeRawPointer.self)
        let kind = raw.load(fromByteOffset: kindOffset, as: Int.self)
        return (Unmanaged<LUNVirtualFileSystem>.fromOpaque(owner).takeUnretainedValue(), FileKind(rawValue: kind)!)
    }

    private func kind(of name: UnsafePointer<CChar>?) -> FileKind? {
        guard let name else { return nil }
        let string = String(cString: name)
        if string.hasSuffix("-wal") { return .wal }
        if string.hasSuffix("-journal") { return .journal }
        if string.hasSuffix("-shm") { return nil }
        return .database
    }

    // MARK: VFS methods

    private func open(name: UnsafePointer<CChar>?, file: UnsafeMutablePointer<sqlite3_file>?,
                      flags: Int32, outFlags: UnsafeMutablePointer<Int32>?) -> Int32 {
        guard let file, let kind = kind(of: name) else { return SQLITE_CANTOPEN }
        let raw = UnsafeMutableRawPointer(file)
        raw.storeBytes(of: UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque()), toByteOffset: Self.ownerOffset,
                       as: UnsafeRawPointer.self)
        raw.storeBytes(of: kind.rawValue, toByteOffset: Self.kindOffset, as: Int.self)
        file.pointee.pMethods = UnsafePointer(ioMethods)
        outFlags?.pointee = readOnly ? (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_READONLY : flags
        return SQLITE_OK
    }

    private func delete(name: UnsafePointer<CChar>?) -> Int32 {
        guard let kind = kind(of: name) else { return SQLITE_OK }
        if readOnly { return SQLITE_READONLY }
        return setLength(kind, 0)
    }

    private func exists(name: UnsafePointer<CChar>?) -> Bool {
        guard let kind = kind(of: name) else { return false }
        return length(kind) > 0
    }

    // MARK: file methods

    func length(_ kind: FileKind) -> Int64 {
        lengths.withLock { $0[kind] }
    }

    private func range(_ kind: FileKind) -> (offset: Int64, capacity: Int64) {
        switch kind {
        case .database: return (region.databaseOffset, region.databaseCapacity)
        case .wal: return (region.walOffset, region.walCapacity)
        case .journal: return (region.journalOffset, region.journalCapacity)
        }
    }

    fileprivate func read(_ kind: FileKind, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64) -> Int32 {
        if kind == .wal, flushLogStatus() != SQLITE_OK { return SQLITE_IOERR_READ }
        let available = max(0, min(Int64(count), length(kind) - offset))
        let (base, _) = range(kind)
        do {
            let n = available > 0 ? try lun.read(into: buffer, count: Int(available), at: base + offset) : 0
            if n < count {
                memset(buffer + n, 0, count - n)
                return SQLITE_IOERR_SHORT_READ
            }
            return SQLITE_OK
        } catch {
            return SQLITE_IOERR_READ
        }
    }

    fileprivate func write(_ kind: FileKind, from buffer: UnsafeRawPointer, count: Int, at offset: Int64) -> Int32 {
        if readOnly { return SQLITE_READONLY }
        let (base, capacity) = range(kind)
        guard offset >= 0, offset + Int64(count) <= capacity else { return SQLITE_FULL }
        do throws(Errno) {
            try verifyEpoch()
            if kind == .wal {
                let committed = try pendingLog.withLock { (pending) throws(Errno) -> Bool in
                    try pending.add(UnsafeRawBufferPointer(start: buffer, count: count), at: base + offset, lun: lun)
                    return pending.isEmpty
                }
                if committed { epochVerified.withLock { $0 = false } }
            } else {
                try lun.write(from: buffer, count: count, at: base + offset)
            }
        } catch {
            return SQLITE_IOERR_WRITE
        }
        let end = offset + Int64(count)
        guard end > length(kind) else { return SQLITE_OK }
        // The log's recorded length grows a megabyte at a time, not per frame, saving a header write per
        // frame: SQLite reads a log only up to its first frame with a stale salt or checksum, so the unwritten
        // tail reads like the leftovers of any recycled log.
        return setLength(kind, kind == .wal ? min(capacity, (end + Self.walGrowth - 1) / Self.walGrowth * Self.walGrowth) : end)
    }

    fileprivate func setLength(_ kind: FileKind, _ newLength: Int64) -> Int32 {
        if readOnly { return SQLITE_READONLY }
        if kind == .wal, flushLogStatus() != SQLITE_OK { return SQLITE_IOERR_WRITE }
        guard newLength <= range(kind).capacity else { return SQLITE_FULL }
        do { try verifyEpoch() } catch { return SQLITE_IOERR_WRITE }
        if kind == .wal, newLength < length(.wal) { pendingLog.withLock { $0.forgetEnd() } }
        let current = lengths.withLock { (lengths) -> Lengths in
            lengths[kind] = newLength
            return lengths
        }
        do {
            try Self.writeHeader(lun: lun, region: region, lengths: current)
            return SQLITE_OK
        } catch {
            return SQLITE_IOERR_WRITE
        }
    }

    fileprivate func sync() -> Int32 {
        guard flushLogStatus() == SQLITE_OK else { return SQLITE_IOERR_FSYNC }
        epochVerified.withLock { $0 = false }
        return (try? lun.dataSync()) != nil ? SQLITE_OK : SQLITE_IOERR_FSYNC
    }

    /// Writes out log frames still gathered in memory.
    func flushLog() throws(Errno) {
        try pendingLog.withLock { (pending) throws(Errno) in try pending.flush(lun: lun) }
        epochVerified.withLock { $0 = false }
    }

    /// One read of the superblock per transaction, not per write: the lease fence already bounds each write in
    /// time; this catches a coordinator whose successor took the volume while it was not looking.
    private func verifyEpoch() throws(Errno) {
        guard let epoch else { return }
        // A lapsed lease is said as such, not as the successor's epoch found on the volume.
        if let fence = lun.fence, !fence.admits() { throw Errno.io }
        try epochVerified.withLock { (verified) throws(Errno) in
            guard !verified else { return }
            try epoch.verify()
            verified = true
        }
    }

    fileprivate func flushLogStatus() -> Int32 {
        do throws(Errno) {
            try flushLog()
            return SQLITE_OK
        } catch {
            return SQLITE_IOERR_WRITE
        }
    }

    // MARK: header

    /// The header is one sector written in one call, so a crash leaves the old or the new lengths.
    static func writeHeader(lun: FileDescriptor, region: MetadataRegion, lengths: Lengths = Lengths()) throws(Errno) {
        var encoder = ByteWriter(capacity: 64)
        encoder.append(headerMagic)
        encoder.append(UInt32(1))
        encoder.append(UInt32(0))
        for length in lengths.values { encoder.append(UInt64(length)) }
        encoder.append(CRC32C.checksum(encoder.bytes))
        try lun.write(encoder.bytes, at: region.headerOffset)
    }

    private static let headerLength = 16 + 8 * 3 + 4

    static func readHeader(lun: FileDescriptor, region: MetadataRegion) throws(Errno) -> Lengths {
        let bytes = try lun.read(count: headerLength, at: region.headerOffset)
        let reader = ByteReader(bytes)
        guard bytes.count == headerLength, Array(bytes[0..<8]) == headerMagic,
              CRC32C.checksum(Array(bytes[0..<(headerLength - 4)])) == reader.uint32(at: headerLength - 4) else {
            throw Errno.io
        }
        var lengths = Lengths()
        lengths.values = (0..<3).map { Int64(bitPattern: reader.uint64(at: 16 + 8 * $0)) }
        let capacities = [region.databaseCapacity, region.walCapacity, region.journalCapacity]
        guard zip(lengths.values, capacities).allSatisfy({ $0 >= 0 && $0 <= $1 }) else { throw Errno.io }
        return lengths
    }

    private static func makeIOMethods() -> sqlite3_io_methods {
        var methods = sqlite3_io_methods()
        methods.iVersion = 1
        methods.xClose = { file in
            let (owner, kind) = LUNVirtualFileSystem.from(file: file)
            return kind == .wal ? owner.flushLogStatus() : SQLITE_OK
        }
        methods.xRead = { file, buffer, count, offset in
            let (owner, kind) = LUNVirtualFileSystem.from(file: file)
            return owner.read(kind, into: buffer!, count: Int(count), at: offset)
        }
        methods.xWrite = { file, buffer, count, offset in
            let (owner, kind) = LUNVirtualFileSystem.from(file: file)
            return owner.write(kind, from: buffer!, count: Int(count), at: offset)
        }
        methods.xTruncate = { file, size in
            let (owner, kind) = LUNVirtualFileSystem.from(file: file)
            return owner.setLength(kind, size)
        }
        methods.xSync = { file, _ in
            LUNVirtualFileSystem.from(file: file).0.sync()
        }
        methods.xFileSize = { file, size in
            let (owner, kind) = LUNVirtualFileSystem.from(file: file)
            size?.pointee = owner.length(kind)
            return SQLITE_OK
        }
        methods.xLock = { _, _ in SQLITE_OK }
        methods.xUnlock = { _, _ in SQLITE_OK }
        methods.xCheckReservedLock = { _, result in
            result?.pointee = 0
            return SQLITE_OK
        }
        methods.xFileControl = { _, _, _ in SQLITE_NOTFOUND }
        methods.xSectorSize = { _ in 4096 }
        methods.xDeviceCharacteristics = { _ in SQLITE_IOCAP_POWERSAFE_OVERWRITE }
        return methods
    }
}
