import Glibc

/// The binary form of metadata calls and their replies, version 1, little-endian.
///
/// Every message starts with a 16-byte envelope: version (u8), type (u8: request, reply or refusal), call
/// kind (u16), request id (node u32, sequence u64). A reply or refusal adds its status (i32: 0 for success,
/// else the errno). The body follows and ends the message (the transport's frame gives its length); lengths
/// and counts in it are u32, so a readdirplus reply of any size a FUSE buffer asks for fits.
/// Decoding trusts nothing: a malformed message throws EPROTO.
public enum MetadataWire {
    public static let version: UInt8 = 1

    enum MessageType: UInt8 {
        case request = 1
        case reply = 2
        /// The server could not decode the request; the status says why (EPROTO).
        case refusal = 3
    }

    static let envelopeSize = 16
    static let attributesSize = 72
    static let segmentSize = 25
    static let fileLockSize = 50

    // MARK: requests

    public static func encodeRequest(id: MetadataRequestID, _ call: MetadataCall) -> [UInt8] {
        var writer = ByteWriter(capacity: envelopeSize + 64)
        writer.appendEnvelope(.request, call.kind, id)
        switch call {
        case .lookup(let parent, let name), .unlink(let parent, let name), .rmdir(let parent, let name):
            writer.append(parent)
            writer.appendBytes(name)
        case .attributes(let ino), .readlink(let ino), .listXattrs(let ino), .opened(let ino):
            writer.append(ino)
        case .setAttributes(let ino, let changes):
            writer.append(ino)
            writer.appendChanges(changes)
        case .createNode(let parent, let name, let mode, let rdev, let symlinkTarget, let caller):
            writer.append(parent)
            writer.appendBytes(name)
            writer.append(mode)
            writer.append(rdev)
            writer.appendBool(symlinkTarget != nil)
            if let symlinkTarget { writer.appendBytes(symlinkTarget) }
            writer.append(caller.uid)
            writer.append(caller.gid)
        case .link(let ino, let newParent, let newName):
            writer.append(ino)
            writer.append(newParent)
            writer.appendBytes(newName)
        case .rename(let parent, let name, let newParent, let newName, let mode):
            writer.append(parent)
            writer.appendBytes(name)
            writer.append(newParent)
            writer.appendBytes(newName)
            writer.append(mode.wireCode)
        case .readdir(let ino, let cookie, let limit, let plus):
            writer.append(ino)
            writer.append(cookie)
            writer.append(UInt32(clamping: max(limit, 0)))
            writer.appendBool(plus)
        case .setXattr(let ino, let name, let value, let create, let replace):
            writer.append(ino)
            writer.appendBytes(name)
            writer.appendBytes(value)
            writer.appendBool(create)
            writer.appendBool(replace)
        case .getXattr(let ino, let name), .removeXattr(let ino, let name):
            writer.append(ino)
            writer.appendBytes(name)
        case .statistics, .commit, .openFiles, .fileLocks, .lockDelegations:
            break
        case .lockConflict(let request):
            writer.appendFileLock(request)
        case .setLock(let request, let wait):
            writer.appendFileLock(request)
            writer.appendBool(wait != nil)
            if let wait { writer.append(wait) }
        case .cancelLockWait(let wait):
            writer.append(wait)
        case .unlock(let ino, let kind, let range, let owner):
            writer.append(ino)
            writer.append(kind.rawValue)
            writer.appendLockRange(range)
            writer.append(owner)
        case .releaseRecordLocks(let ino, let owner):
            writer.append(ino)
            writer.append(owner)
        case .reclaimLocks(let locks):
            writer.appendCount(locks.count)
            for lock in locks { writer.appendFileLock(lock) }
        case .withdrawLocks(let ino):
            writer.append(ino)
        case .reclaimOpenFiles(let files):
            writer.appendCount(files.count)
            for file in files {
                writer.append(file.ino)
                writer.append(file.handle)
            }
        case .depositLocks(let ino, let locks):
            writer.append(ino)
            writer.appendCount(locks.count)
            for lock in locks { writer.appendFileLock(lock) }
        case .released(let ino, let handle):
            writer.append(ino)
            writer.append(handle)
        case .mapping(let ino, let range), .prepareWrite(let ino, let range):
            writer.append(ino)
            writer.appendRange(range)
        case .completeWrite(let ino, let filled, let end):
            writer.append(ino)
            writer.appendCount(filled.count)
            for range in filled { writer.appendRange(range) }
            writer.append(end)
        case .fallocate(let ino, let range, let mode):
            writer.append(ino)
            writer.appendRange(range)
            switch mode {
            case .allocate(let keepSize):
                writer.append(UInt8(0))
                writer.appendBool(keepSize)
            case .punchHole:
                writer.append(UInt8(1))
            case .zeroRange(let keepSize):
                writer.append(UInt8(2))
                writer.appendBool(keepSize)
            }
        case .sync(let handle):
            writer.appendBool(handle != nil)
            if let handle { writer.append(handle) }
        }
        return writer.bytes
    }

    /// The kind of call a request carries, read from its envelope alone (nil: not a request of this version).
    public static func requestKind(_ message: [UInt8]) -> MetadataCallKind? {
        var reader = WireReader(message)
        guard let (type, kind, _) = try? reader.envelope(), type == .request else { return nil }
        return kind
    }

    /// Whether a request is a lock request that may wait for its grant.
    public static func waitsForLock(_ message: [UInt8]) -> Bool {
        guard case .setLock(_, let wait)? = try? decodeRequest(message).call else { return false }
        return wait != nil
    }

    /// Whether a request is a write completion that fills unwritten blocks: it waits for a flush of the LUN.
    public static func fillsBlocks(_ message: [UInt8]) -> Bool {
        guard case .completeWrite(_, let filled, _)? = try? decodeRequest(message).call else { return false }
        return !filled.isEmpty
    }

    public static func decodeRequest(_ message: [UInt8]) throws(Errno) -> (id: MetadataRequestID, call: MetadataCall) {
        var reader = WireReader(message)
        let (type, kind, id) = try reader.envelope()
        guard type == .request else { throw .protocolError }
        let call = try reader.call(kind)
        try reader.finish()
        return (id, call)
    }

    // MARK: replies

    public static func encodeReply(id: MetadataRequestID, kind: MetadataCallKind, _ outcome: Result<MetadataResult, Errno>) -> [UInt8] {
        var writer = ByteWriter(capacity: envelopeSize + 4 + ((try? outcome.get()).map(estimatedSize) ?? 0))
        writer.appendEnvelope(.reply, kind, id)
        switch outcome {
        case .failure(let error):
            // A status of 0 means success on the wire; no errno is 0, but never send one as if it were.
            writer.append(error.code > 0 ? error.code : EIO)
        case .success(let result):
            writer.append(Int32(0))
            writer.appendResult(result)
        }
        return writer.bytes
    }

    /// About the body's size, so a large reply is written into one allocation.
    static func estimatedSize(_ result: MetadataResult) -> Int {
        switch result {
        case .done, .handle, .granted: 8
        case .fileLock: 1 + fileLockSize
        case .fileLocks(let locks): 4 + locks.count * fileLockSize
        case .delegations(let delegations): 4 + delegations.count * 12
        case .attributes, .statistics: attributesSize
        case .bytes(let bytes): 4 + bytes.count
        case .names(let names): 4 + names.reduce(0) { $0 + 4 + $1.count }
        case .entries(let entries): 4 + entries.reduce(0) { $0 + 25 + $1.name.count + ($1.attributes == nil ? 0 : attributesSize) }
        case .mapping(_, let segments), .segments(let segments): 12 + segments.count * segmentSize
        case .openFiles(let files): 4 + files.reduce(0) { $0 + 21 + ($1.path?.utf8.count ?? 0) }
        }
    }

    /// The answer to a request the server could not decode: the request's envelope echoed as far as it could
    /// be read, so the sender can match it to its call.
    public static func encodeRefusal(of request: [UInt8], _ error: Errno) -> [UInt8] {
        var echo = WireReader(request)
        _ = try? echo.integer(UInt16.self)  // version and type, which the refusal replaces
        let kindCode = (try? echo.integer(UInt16.self)) ?? 0
        let node = (try? echo.integer(UInt32.self)) ?? 0
        let sequence = (try? echo.integer(UInt64.self)) ?? 0
        var writer = ByteWriter(capacity: envelopeSize + 4)
        writer.append(version)
        writer.append(MessageType.refusal.rawValue)
        writer.append(kindCode)
        writer.append(node)
        writer.append(sequence)
        writer.append(error.code > 0 ? error.code : EPROTO)
        return writer.bytes
    }

    /// The result of the call `kind` with request id `id`, or the error the server answered. A reply to
    /// another request or another kind of call is malformed: the channel paired it wrongly.
    public static func decodeReply(_ message: [UInt8], id expected: MetadataRequestID,
                                   kind expectedKind: MetadataCallKind) throws(Errno) -> MetadataResult {
        var reader = WireReader(message)
        let version = try reader.integer(UInt8.self)
        guard version == Self.version else { throw .protocolError }
        let type = try reader.integer(UInt8.self)
        let kind = try reader.integer(UInt16.self)
        let id = MetadataRequestID(node: try reader.integer(), sequence: try reader.integer())
        guard kind == expectedKind.rawValue, id == expected else { throw .protocolError }
        let status = try reader.integer(Int32.self)
        switch MessageType(rawValue: type) {
        case .reply:
            guard status >= 0 else { throw .protocolError }
            if status > 0 {
                try reader.finish()
                throw Errno(status)
            }
            let result = try reader.result(expectedKind)
            try reader.finish()
            return result
        case .refusal:
            guard status > 0 else { throw .protocolError }
            try reader.finish()
            throw Errno(status)
        case .request, nil:
            throw .protocolError
        }
    }
}

// MARK: - fields

extension ByteWriter {
    mutating func appendEnvelope(_ type: MetadataWire.MessageType, _ kind: MetadataCallKind, _ id: MetadataRequestID) {
        append(MetadataWire.version)
        append(type.rawValue)
        append(kind.rawValue)
        append(id.node)
        append(id.sequence)
    }

    /// Lengths and counts are u32; nothing a FUSE request can carry comes near 4 GiB (and a length that did
    /// would leave the message inconsistent, which the decoder refuses, rather than wrong).
    mutating func appendCount(_ count: Int) { append(UInt32(truncatingIfNeeded: count)) }

    mutating func appendBytes(_ value: [UInt8]) {
        appendCount(value.count)
        append(value)
    }

    mutating func appendBool(_ value: Bool) { append(UInt8(value ? 1 : 0)) }

    mutating func appendRange(_ range: Range<Int64>) {
        append(range.lowerBound)
        append(range.upperBound)
    }

    mutating func appendChanges(_ changes: AttributeChanges) {
        var present: UInt8 = 0
        if changes.mode != nil { present |= 1 }
        if changes.uid != nil { present |= 2 }
        if changes.gid != nil { present |= 4 }
        if changes.size != nil { present |= 8 }
        if changes.atime != nil { present |= 16 }
        if changes.mtime != nil { present |= 32 }
        append(present)
        if let mode = changes.mode { append(mode) }
        if let uid = changes.uid { append(uid) }
        if let gid = changes.gid { append(gid) }
        if let size = changes.size { append(size) }
        if let atime = changes.atime { appendTime(atime) }
        if let mtime = changes.mtime { appendTime(mtime) }
    }

    mutating func appendTime(_ time: AttributeChanges.Time) {
        switch time {
        case .now:
            append(UInt8(0))
        case .at(let nanoseconds):
            append(UInt8(1))
            append(nanoseconds)
        }
    }

    mutating func appendAttributes(_ attributes: InodeAttributes) {
        append(attributes.ino)
        append(attributes.mode)
        append(attributes.nlink)
        append(attributes.uid)
        append(attributes.gid)
        append(attributes.size)
        append(attributes.allocated)
        append(attributes.rdev)
        append(attributes.atime)
        append(attributes.mtime)
        append(attributes.ctime)
    }

    mutating func appendSegments(_ segments: [FileSegment]) {
        appendCount(segments.count)
        for segment in segments {
            append(segment.logical)
            append(segment.length)
            append(UInt8((segment.physical != nil ? 1 : 0) | (segment.unwritten ? 2 : 0)))
            append(segment.physical ?? 0)
        }
    }

    mutating func appendLockRange(_ range: FileLockRange) {
        append(range.first)
        append(range.last)
    }

    mutating func appendFileLock(_ lock: FileLock) {
        append(lock.ino)
        append(lock.kind.rawValue)
        append(lock.mode.rawValue)
        appendLockRange(lock.range)
        append(lock.owner.node)
        append(lock.owner.owner)
        append(lock.handle)
        append(lock.pid)
    }

    mutating func appendResult(_ result: MetadataResult) {
        switch result {
        case .done:
            break
        case .attributes(let attributes):
            appendAttributes(attributes)
        case .bytes(let bytes):
            appendBytes(bytes)
        case .names(let names):
            appendCount(names.count)
            for name in names { appendBytes(name) }
        case .entries(let entries):
            appendCount(entries.count)
            for entry in entries {
                appendBytes(entry.name)
                append(entry.ino)
                append(entry.mode)
                append(entry.nextCookie)
                appendBool(entry.attributes != nil)
                if let attributes = entry.attributes { appendAttributes(attributes) }
            }
        case .statistics(let statistics):
            append(statistics.blockSize)
            append(statistics.totalBlocks)
            append(statistics.freeBlocks)
            append(statistics.totalInodes)
            append(statistics.freeInodes)
        case .handle(let handle):
            append(handle)
        case .mapping(let size, let segments):
            append(size)
            appendSegments(segments)
        case .segments(let segments):
            appendSegments(segments)
        case .openFiles(let files):
            appendCount(files.count)
            for file in files {
                append(file.node)
                append(file.ino)
                append(file.handles)
                appendBool(file.path != nil)
                if let path = file.path { appendBytes(Array(path.utf8)) }
            }
        case .fileLock(let lock):
            appendBool(lock != nil)
            if let lock { appendFileLock(lock) }
        case .granted(let granted):
            appendBool(granted)
        case .fileLocks(let locks):
            appendCount(locks.count)
            for lock in locks { appendFileLock(lock) }
        case .delegations(let delegations):
            appendCount(delegations.count)
            for delegation in delegations {
                append(delegation.ino)
                append(delegation.node)
            }
        }
    }
}

extension WireReader {
    mutating func envelope() throws(Errno) -> (MetadataWire.MessageType, MetadataCallKind, MetadataRequestID) {
        guard try integer(UInt8.self) == MetadataWire.version else { throw .protocolError }
        guard let type = MetadataWire.MessageType(rawValue: try integer()) else { throw .protocolError }
        guard let kind = MetadataCallKind(rawValue: try integer()) else { throw .protocolError }
        let id = MetadataRequestID(node: try integer(), sequence: try integer())
        return (type, kind, id)
    }

    mutating func call(_ kind: MetadataCallKind) throws(Errno) -> MetadataCall {
        switch kind {
        case .lookup: return .lookup(parent: try integer(), name: try bytes())
        case .attributes: return .attributes(ino: try integer())
        case .setAttributes: return .setAttributes(ino: try integer(), changes: try changes())
        case .createNode:
            let parent: UInt64 = try integer()
            let name = try bytes()
            let mode: UInt32 = try integer()
            let rdev: UInt64 = try integer()
            let symlinkTarget = try bool() ? try bytes() : nil
            return .createNode(parent: parent, name: name, mode: mode, rdev: rdev, symlinkTarget: symlinkTarget,
                               caller: Caller(uid: try integer(), gid: try integer()))
        case .readlink: return .readlink(ino: try integer())
        case .link: return .link(ino: try integer(), newParent: try integer(), newName: try bytes())
        case .unlink: return .unlink(parent: try integer(), name: try bytes())
        case .rmdir: return .rmdir(parent: try integer(), name: try bytes())
        case .rename:
            return .rename(parent: try integer(), name: try bytes(), newParent: try integer(), newName: try bytes(),
                           mode: try renameMode())
        case .readdir:
            return .readdir(ino: try integer(), cookie: try integer(), limit: Int(try integer(UInt32.self)), plus: try bool())
        case .setXattr:
            return .setXattr(ino: try integer(), name: try bytes(), value: try bytes(), create: try bool(), replace: try bool())
        case .getXattr: return .getXattr(ino: try integer(), name: try bytes())
        case .listXattrs: return .listXattrs(ino: try integer())
        case .removeXattr: return .removeXattr(ino: try integer(), name: try bytes())
        case .statistics: return .statistics
        case .opened: return .opened(ino: try integer())
        case .released: return .released(ino: try integer(), handle: try integer())
        case .mapping: return .mapping(ino: try integer(), range: try range())
        case .prepareWrite: return .prepareWrite(ino: try integer(), range: try range())
        case .completeWrite:
            let ino: UInt64 = try integer()
            let count = try count(minimumSize: 16)
            var filled: [Range<Int64>] = []
            filled.reserveCapacity(count)
            for _ in 0..<count { filled.append(try range()) }
            return .completeWrite(ino: ino, filled: filled, end: try integer())
        case .fallocate:
            let ino: UInt64 = try integer()
            let range = try range()
            let mode: FallocateMode
            switch try integer(UInt8.self) {
            case 0: mode = .allocate(keepSize: try bool())
            case 1: mode = .punchHole
            case 2: mode = .zeroRange(keepSize: try bool())
            default: throw .protocolError
            }
            return .fallocate(ino: ino, range: range, mode: mode)
        case .commit: return .commit
        case .sync: return .sync(reportingTo: try bool() ? try integer(UInt64.self) : nil)
        case .openFiles: return .openFiles
        case .lockConflict: return .lockConflict(try fileLock())
        case .setLock: return .setLock(try fileLock(), wait: try bool() ? try integer(UInt64.self) : nil)
        case .cancelLockWait: return .cancelLockWait(wait: try integer())
        case .unlock:
            return .unlock(ino: try integer(), kind: try lockKind(), range: try lockRange(), owner: try integer())
        case .releaseRecordLocks: return .releaseRecordLocks(ino: try integer(), owner: try integer())
        case .fileLocks: return .fileLocks
        case .reclaimLocks: return .reclaimLocks(try fileLocks())
        case .withdrawLocks: return .withdrawLocks(ino: try integer())
        case .depositLocks: return .depositLocks(ino: try integer(), try fileLocks())
        case .lockDelegations: return .lockDelegations
        case .reclaimOpenFiles:
            let count = try count(minimumSize: 16)
            var files: [OpenHandle] = []
            files.reserveCapacity(count)
            for _ in 0..<count { files.append(OpenHandle(ino: try integer(), handle: try integer())) }
            return .reclaimOpenFiles(files)
        }
    }

    mutating func lockKind() throws(Errno) -> FileLockKind {
        guard let kind = FileLockKind(rawValue: try integer()) else { throw .protocolError }
        return kind
    }

    /// A range is never empty and starts at a non-negative offset, as the kernel's are.
    mutating func lockRange() throws(Errno) -> FileLockRange {
        let range = FileLockRange(first: try integer(), last: try integer())
        guard range.first >= 0, range.last >= range.first else { throw .protocolError }
        return range
    }

    mutating func fileLock() throws(Errno) -> FileLock {
        let ino: UInt64 = try integer()
        let kind = try lockKind()
        guard let mode = FileLockMode(rawValue: try integer()) else { throw .protocolError }
        return FileLock(ino: ino, kind: kind, mode: mode, range: try lockRange(),
                        owner: FileLockOwner(node: try integer(), owner: try integer()), handle: try integer(), pid: try integer())
    }

    mutating func fileLocks() throws(Errno) -> [FileLock] {
        let count = try count(minimumSize: MetadataWire.fileLockSize)
        var locks: [FileLock] = []
        locks.reserveCapacity(count)
        for _ in 0..<count { locks.append(try fileLock()) }
        return locks
    }

    mutating func renameMode() throws(Errno) -> RenameMode {
        switch try integer(UInt8.self) {
        case 0: return .replace
        case 1: return .noReplace
        case 2: return .exchange
        default: throw .protocolError
        }
    }

    mutating func changes() throws(Errno) -> AttributeChanges {
        let present = try integer(UInt8.self)
        guard present & ~63 == 0 else { throw .protocolError }
        var changes = AttributeChanges()
        if present & 1 != 0 { changes.mode = try integer() }
        if present & 2 != 0 { changes.uid = try integer() }
        if present & 4 != 0 { changes.gid = try integer() }
        if present & 8 != 0 { changes.size = try integer() }
        if present & 16 != 0 { changes.atime = try time() }
        if present & 32 != 0 { changes.mtime = try time() }
        return changes
    }

    mutating func time() throws(Errno) -> AttributeChanges.Time {
        switch try integer(UInt8.self) {
        case 0: return .now
        case 1: return .at(try integer())
        default: throw .protocolError
        }
    }

    /// Sizes must fit `Int64`: the FUSE adapter turns them into `off_t`.
    mutating func attributes() throws(Errno) -> InodeAttributes {
        let attributes = InodeAttributes(
            ino: try integer(), mode: try integer(), nlink: try integer(), uid: try integer(), gid: try integer(),
            size: try integer(), allocated: try integer(), rdev: try integer(),
            atime: try integer(), mtime: try integer(), ctime: try integer())
        guard attributes.size <= UInt64(Int64.max), attributes.allocated <= UInt64(Int64.max) else { throw .protocolError }
        return attributes
    }

    /// Segments lie within the non-negative `Int64` range on both sides, as the data path computes with them.
    mutating func segments() throws(Errno) -> [FileSegment] {
        let count = try count(minimumSize: MetadataWire.segmentSize)
        var segments: [FileSegment] = []
        segments.reserveCapacity(count)
        for _ in 0..<count {
            let logical = try nonNegative()
            let length = try nonNegative()
            let flags = try integer(UInt8.self)
            let physical = try nonNegative()
            guard flags & ~3 == 0, !logical.addingReportingOverflow(length).overflow,
                  !physical.addingReportingOverflow(length).overflow else { throw .protocolError }
            segments.append(FileSegment(logical: logical, length: length, physical: flags & 1 != 0 ? physical : nil,
                                        unwritten: flags & 2 != 0))
        }
        return segments
    }

    mutating func result(_ kind: MetadataCallKind) throws(Errno) -> MetadataResult {
        switch kind {
        case .lookup, .attributes, .setAttributes, .createNode, .link:
            return .attributes(try attributes())
        case .readlink, .getXattr:
            return .bytes(try bytes())
        case .listXattrs:
            let count = try count(minimumSize: 4)
            var names: [[UInt8]] = []
            names.reserveCapacity(count)
            for _ in 0..<count { names.append(try bytes()) }
            return .names(names)
        case .readdir:
            let count = try count(minimumSize: 4 + 8 + 4 + 8 + 1)
            var entries: [DirectoryEntry] = []
            entries.reserveCapacity(count)
            for _ in 0..<count {
                let name = try bytes()
                let ino: UInt64 = try integer()
                let mode: UInt32 = try integer()
                let nextCookie: Int64 = try integer()
                let attributes = try bool() ? try attributes() : nil
                entries.append(DirectoryEntry(name: name, ino: ino, mode: mode, nextCookie: nextCookie, attributes: attributes))
            }
            return .entries(entries)
        case .statistics:
            return .statistics(VolumeStatistics(blockSize: try integer(), totalBlocks: try integer(), freeBlocks: try integer(),
                                                totalInodes: try integer(), freeInodes: try integer()))
        case .opened:
            return .handle(try integer())
        case .mapping:
            let size: UInt64 = try integer()
            guard size <= UInt64(Int64.max) else { throw .protocolError }
            return .mapping(size: size, segments: try segments())
        case .prepareWrite:
            return .segments(try segments())
        case .openFiles:
            let count = try count(minimumSize: 17)
            var files: [OpenFile] = []
            files.reserveCapacity(count)
            for _ in 0..<count {
                let node: UInt32 = try integer()
                let ino: UInt64 = try integer()
                let handles: UInt32 = try integer()
                let path = try bool() ? String(decoding: try bytes(), as: UTF8.self) : nil
                files.append(OpenFile(node: node, ino: ino, handles: handles, path: path))
            }
            return .openFiles(files)
        case .lockConflict:
            return .fileLock(try bool() ? try fileLock() : nil)
        case .setLock:
            return .granted(try bool())
        case .fileLocks, .withdrawLocks:
            return .fileLocks(try fileLocks())
        case .lockDelegations:
            let count = try count(minimumSize: 12)
            var delegations: [DelegatedInode] = []
            delegations.reserveCapacity(count)
            for _ in 0..<count { delegations.append(DelegatedInode(ino: try integer(), node: try integer())) }
            return .delegations(delegations)
        case .unlink, .rmdir, .rename, .setXattr, .removeXattr, .released, .completeWrite, .fallocate, .commit, .sync,
             .cancelLockWait, .unlock, .releaseRecordLocks, .reclaimLocks, .depositLocks, .reclaimOpenFiles:
            return .done
        }
    }
}

extension RenameMode {
    var wireCode: UInt8 {
        switch self {
        case .replace: 0
        case .noReplace: 1
        case .exchange: 2
        }
    }
}
