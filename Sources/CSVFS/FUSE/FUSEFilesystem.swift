import CFuse
import CSVFSSystem
import Dispatch
import Glibc
import Logging

/// The FUSE adapter: turns low-level FUSE requests into metadata-service and data-path calls.
/// It holds no filesystem state of its own (beyond what `DiskAttributes` remembers of names and images),
/// so the same code serves any `MetadataService`.
public final class FUSEFilesystem: Sendable {
    let service: any MetadataService
    let data: DataPath
    /// The `user.vhd.*` attributes of images, in front of the service's xattr calls.
    let disks: DiskAttributes
    /// `.csvfs` and the raw view of every disk.
    let rawView: RawView
    /// What open handles claim of images: the images below an open child stay read-only.
    let imageClaims: ImageClaims
    let logger: Logger
    /// How long the kernel may cache names and attributes.
    let cache: any KernelCachePolicy
    /// File locks, kept cluster-wide by the service.
    let locks: NodeFileLocks
    /// Called once the kernel's INIT is answered, that is when the mount can serve requests.
    let initialized: @Sendable () -> Void

    /// `mountpoint` (absolute) is where this host sees the volume: images' parent paths are shown under it.
    /// `node` is the cluster node this mount is (0 for a volume mounted alone): the node of its file locks' owners.
    public init(service: any MetadataService, data: DataPath, cache: any KernelCachePolicy, mountpoint: String = "",
                node: UInt32 = 0, ownership: any DiskOwnership, protection: any ImageProtection, logger: Logger,
                initialized: @escaping @Sendable () -> Void) {
        self.service = service
        locks = NodeFileLocks(service: service, node: node)
        let disks = DiskAttributes(service: service, data: data, mountpoint: mountpoint, ownership: ownership)
        self.disks = disks
        imageClaims = ImageClaims(images: disks, protection: protection)
        rawView = RawView(service: service, images: disks,
                          disks: RawDisks(service: service, data: data, disks: disks, ownership: ownership, logger: logger))
        self.cache = cache
        self.data = data
        self.logger = logger
        self.initialized = initialized
    }

    private static let maxRequest: UInt32 = 1 << 20

    func initialize(_ connection: UnsafeMutablePointer<fuse_conn_info>) {
        let wanted = UInt32(FUSE_CAP_ASYNC_READ | FUSE_CAP_ASYNC_DIO | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_READDIRPLUS
                            | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_SPLICE_READ
                            | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS)
        connection.pointee.want |= wanted & connection.pointee.capable
        // Every listing with attributes, not only the first batch of one (the kernel's "auto" would list the
        // rest without, and `ls -l` would then look up every entry on its own): a node that shares the volume
        // reads them under licences, and the lookups that follow are answered from its cache.
        connection.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS_AUTO)
        connection.pointee.max_write = Self.maxRequest
        connection.pointee.max_readahead = Self.maxRequest
        connection.pointee.max_background = 64
        connection.pointee.congestion_threshold = 48
        connection.pointee.time_gran = 1
        initialized()
    }

    static func name(_ pointer: UnsafePointer<CChar>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
    }

    static func caller(_ request: fuse_req_t) -> Caller {
        let context = fuse_req_ctx(request)!.pointee
        return Caller(uid: context.uid, gid: context.gid)
    }

    // MARK: names

    /// A name with its inode's attributes, as the kernel may cache them.
    private func entry(_ reply: consuming FUSEReply, _ attributes: InodeAttributes, parent: UInt64, name: [UInt8],
                       since ticket: CacheTicket) {
        disks.names.saw(attributes.ino, parent: parent, name: name)
        reply.entry(attributes, timeout: cache.entryTimeout(since: ticket),
                    attributeTimeout: cache.attributeTimeout(attributes.ino, since: ticket))
    }

    func lookup(_ reply: consuming FUSEReply, parent: UInt64, name: [UInt8]) {
        if let raw = RawViewInode(parent) { return rawLookup(reply, parent: raw, name: name) }
        if RawViewInode.isControlName(name, in: parent) { return rawLookup(reply, parent: nil, name: name) }
        let ticket = cache.ticket()
        do {
            entry(reply, try service.lookup(parent: parent, name: name), parent: parent, name: name, since: ticket)
        } catch {
            if error == .noEntry {
                reply.negativeEntry(timeout: cache.entryTimeout(since: ticket))
            } else {
                reply.error(error)
            }
        }
    }

    func createNode(_ reply: consuming FUSEReply, parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64,
                    symlinkTarget: [UInt8]? = nil, caller: Caller) {
        if Self.isReserved(parent: parent, name: name) { return reply.error(.notPermitted) }
        let ticket = cache.ticket()
        do {
            let attributes = try service.createNode(parent: parent, name: name, mode: mode, rdev: rdev,
                                                    symlinkTarget: symlinkTarget, caller: caller)
            entry(reply, attributes, parent: parent, name: name, since: ticket)
        } catch {
            reply.error(error)
        }
    }

    func create(_ reply: consuming FUSEReply, parent: UInt64, name: [UInt8], mode: UInt32, caller: Caller,
                file: UnsafeMutablePointer<fuse_file_info>) {
        if Self.isReserved(parent: parent, name: name) { return reply.error(.notPermitted) }
        let ticket = cache.ticket()
        do {
            let attributes = try service.createNode(parent: parent, name: name, mode: mode, rdev: 0,
                                                    symlinkTarget: nil, caller: caller)
            file.pointee.fh = try service.opened(attributes.ino)
            disks.names.saw(attributes.ino, parent: parent, name: name)
            reply.create(attributes, timeout: cache.entryTimeout(since: ticket),
                         attributeTimeout: cache.attributeTimeout(attributes.ino, since: ticket), file: file)
        } catch {
            reply.error(error)
        }
    }

    func link(_ reply: consuming FUSEReply, ino: UInt64, newParent: UInt64, newName: [UInt8]) {
        if RawViewInode(ino) != nil || Self.isReserved(parent: newParent, name: newName) { return reply.error(.notPermitted) }
        let ticket = cache.ticket()
        do {
            entry(reply, try service.link(ino, newParent: newParent, newName: newName), parent: newParent, name: newName,
                  since: ticket)
        } catch {
            reply.error(error)
        }
    }

    func rename(_ reply: consuming FUSEReply, parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: UInt32) {
        if Self.isReserved(parent: parent, name: name) || Self.isReserved(parent: newParent, name: newName) {
            return reply.error(.notPermitted)
        }
        let mode: RenameMode
        switch flags {
        case 0: mode = .replace
        case UInt32(CSVFS_RENAME_NOREPLACE): mode = .noReplace
        case UInt32(CSVFS_RENAME_EXCHANGE): mode = .exchange
        default:
            reply.error(.invalid)
            return
        }
        perform(reply) { () throws(Errno) in
            try service.rename(parent: parent, name: name, newParent: newParent, newName: newName, mode: mode)
            disks.names.renamed(parent: parent, name: name, newParent: newParent, newName: newName, exchange: mode == .exchange)
        }
    }

    func unlink(_ reply: consuming FUSEReply, parent: UInt64, name: [UInt8]) {
        if Self.isReserved(parent: parent, name: name) { return reply.error(.notPermitted) }
        perform(reply) { () throws(Errno) in try service.unlink(parent: parent, name: name) }
    }

    func rmdir(_ reply: consuming FUSEReply, parent: UInt64, name: [UInt8]) {
        if Self.isReserved(parent: parent, name: name) { return reply.error(.notPermitted) }
        perform(reply) { () throws(Errno) in try service.rmdir(parent: parent, name: name) }
    }

    /// Runs an operation whose only answer is success or an errno.
    func perform(_ reply: consuming FUSEReply, _ operation: () throws(Errno) -> Void) {
        do {
            try operation()
            reply.ok()
        } catch {
            reply.error(error)
        }
    }

    /// FORGET: the kernel evicted the inode.
    func forget(_ ino: UInt64) {
        guard RawViewInode(ino) == nil else { return }
        cache.forgotten(ino)
        disks.names.forgot(ino)
    }

    // MARK: attributes

    func getattr(_ reply: consuming FUSEReply, ino: UInt64) {
        if let raw = RawViewInode(ino) { return rawGetattr(reply, raw) }
        let ticket = cache.ticket()
        do {
            reply.attributes(try service.attributes(ino), timeout: cache.attributeTimeout(ino, since: ticket))
        } catch {
            reply.error(error)
        }
    }

    func setattr(_ reply: consuming FUSEReply, ino: UInt64, attributes: Glibc.stat, toSet: Int32) {
        var changes = AttributeChanges()
        func has(_ flag: Int32) -> Bool { toSet & flag != 0 }
        if has(FUSE_SET_ATTR_MODE) { changes.mode = attributes.st_mode }
        if has(FUSE_SET_ATTR_UID) { changes.uid = attributes.st_uid }
        if has(FUSE_SET_ATTR_GID) { changes.gid = attributes.st_gid }
        if has(FUSE_SET_ATTR_SIZE) {
            guard attributes.st_size >= 0 else {
                reply.error(.invalid)
                return
            }
            changes.size = UInt64(attributes.st_size)
        }
        if has(FUSE_SET_ATTR_ATIME_NOW) { changes.atime = .now }
        else if has(FUSE_SET_ATTR_ATIME) { changes.atime = .at(FUSEAttributes.nanoseconds(attributes.st_atim)) }
        if has(FUSE_SET_ATTR_MTIME_NOW) { changes.mtime = .now }
        else if has(FUSE_SET_ATTR_MTIME) { changes.mtime = .at(FUSEAttributes.nanoseconds(attributes.st_mtim)) }
        if let raw = RawViewInode(ino) { return rawSetattr(reply, raw, changes) }
        let ticket = cache.ticket()
        do {
            let changes = changes
            if changes.size != nil { try imageClaims.truncating(ino) }
            let result = try changes.size == nil
                ? service.setAttributes(ino, changes)
                : data.truncate(ino, changes)
            reply.attributes(result, timeout: cache.attributeTimeout(ino, since: ticket))
        } catch {
            reply.error(error)
        }
    }

    func readlink(_ reply: consuming FUSEReply, ino: UInt64) {
        if RawViewInode(ino) != nil { return reply.error(.invalid) }
        do {
            reply.readlink(try service.readlink(ino))
        } catch {
            reply.error(error)
        }
    }

    func statfs(_ reply: consuming FUSEReply) {
        do {
            reply.statfs(try service.statistics())
        } catch {
            reply.error(error)
        }
    }

    // MARK: files

    func open(_ reply: consuming FUSEReply, ino: UInt64, file: UnsafeMutablePointer<fuse_file_info>) {
        if let raw = RawViewInode(ino) { return rawOpen(reply, raw, file: file) }
        do throws(Errno) {
            let attributes = try service.attributes(ino)
            if attributes.isDirectory {
                reply.error(.isDirectory)
                return
            }
            let writable = file.pointee.flags & O_ACCMODE != O_RDONLY
            let handle = try service.opened(ino)
            do throws(Errno) {
                // Before the truncate: an image below an open child is not emptied either.
                try imageClaims.opening(ino, handle: handle, writable: writable)
                if file.pointee.flags & O_TRUNC != 0, attributes.size > 0, writable {
                    _ = try data.truncate(ino, AttributeChanges(size: 0))
                }
            } catch {
                imageClaims.released(handle: handle)
                try? service.released(ino, handle: handle)
                throw error
            }
            file.pointee.fh = handle
            reply.open(file)
        } catch {
            reply.error(error)
        }
    }

    func read(_ reply: consuming FUSEReply, ino: UInt64, size: Int, offset: Int64) {
        if let raw = RawViewInode(ino) { return rawRead(reply, raw, size: size, offset: offset) }
        guard offset >= 0 else {
            reply.error(.invalid)
            return
        }
        // With the AIO engine the answer goes out from its completion, and this thread is free for the next request.
        let pending = PendingReply(reply)
        data.startRead(ino, offset: offset, count: size) { result in
            let reply = pending.take()
            switch result {
            case .success(let bytes): reply.buffer(bytes)
            case .failure(let error): reply.error(error)
            }
        }
    }

    func release(_ reply: consuming FUSEReply, ino: UInt64, handle: UInt64) {
        if let raw = RawViewInode(ino) { return rawRelease(reply, raw, handle: handle) }
        // The coordinator drops the open file's OFD and flock locks as it releases it.
        defer { locks.released(handle: handle) }
        if imageClaims.writtenImage(handle: handle) == ino { rawView.disks.fileWriterClosed(ino) }
        imageClaims.released(handle: handle)
        perform(reply) { () throws(Errno) in try service.released(ino, handle: handle) }
    }

    /// Only SEEK_DATA and SEEK_HOLE reach us; the kernel answers the other kinds itself.
    func lseek(_ reply: consuming FUSEReply, ino: UInt64, offset: Int64, whence: Int32) {
        guard whence == Int32(CSVFS_SEEK_DATA) || whence == Int32(CSVFS_SEEK_HOLE) else {
            reply.error(.invalid)
            return
        }
        if let raw = RawViewInode(ino) { return rawSeek(reply, raw, offset: offset, data: whence == Int32(CSVFS_SEEK_DATA)) }
        do {
            reply.offset(try data.seek(ino, from: offset, data: whence == Int32(CSVFS_SEEK_DATA)))
        } catch {
            reply.error(error)
        }
    }

    /// A write to an image the handle opened for writing needs the disk's ownership, as its raw view's writes do.
    func writeBuffer(_ reply: consuming FUSEReply, ino: UInt64, handle: UInt64, source: UnsafeMutablePointer<fuse_bufvec>,
                     offset: Int64) {
        if let raw = RawViewInode(ino) { return rawWrite(reply, raw, source: source, offset: offset) }
        guard offset >= 0 else {
            reply.error(.invalid)
            return
        }
        do throws(Errno) {
            if imageClaims.writtenImage(handle: handle) == ino {
                try rawView.disks.withFileWrite(ino) { () throws(Errno) in try write(ino, source: source, offset: offset) }
            } else {
                try write(ino, source: source, offset: offset)
            }
            reply.written(fuse_buf_size(source))
        } catch {
            reply.error(error)
        }
    }

    /// Write data as libfuse has it: in memory (block-aligned when it came through the request loop's buffers,
    /// so it goes to the LUN without a copy), or still in a pipe when the kernel spliced the request.
    private func write(_ ino: UInt64, source: UnsafeMutablePointer<fuse_bufvec>, offset: Int64) throws(Errno) {
        let count = fuse_buf_size(source)
        let first = source.pointee.buf
        let inPipe = source.pointee.count == 1 && first.flags.rawValue & FUSE_BUF_IS_FD.rawValue != 0
            && first.flags.rawValue & FUSE_BUF_FD_SEEK.rawValue == 0
        if inPipe && data.takesPipes && offset % 4096 == 0 && count % 4096 == 0 {
            try data.write(ino, offset: offset, count: count, pipe: first.fd)
        } else if source.pointee.count == 1 && first.flags.rawValue & FUSE_BUF_IS_FD.rawValue == 0 {
            // In memory, and block-aligned when it came through the request loop's buffers.
            try data.write(ino, offset: offset, data: UnsafeRawBufferPointer(start: first.mem, count: count))
        } else {
            try data.write(ino, offset: offset, count: count) { (destination) throws(Errno) in
                var target = cfuse_bufvec_memory(destination, count)
                let copied = fuse_buf_copy(&target, source, fuse_buf_copy_flags(rawValue: 0))
                if copied < 0 { throw Errno(Int32(-copied)) }
                if copied != count { throw Errno.io }
            }
        }
    }

    /// fsync and fsyncdir: answered from a worker so a slow device flush does not hold a FUSE thread.
    /// A file's fsync (`handle` set) also reports, once, an earlier flush that failed to make its changes durable.
    func fsync(_ reply: consuming FUSEReply, ino: UInt64, handle: UInt64?) {
        if let raw = RawViewInode(ino), let handle { return rawFsync(reply, raw, handle: handle) }
        let service = service
        let pending = PendingReply(reply)
        DispatchQueue.global().async {
            let reply = pending.take()
            do throws(Errno) {
                try service.sync(reportingTo: handle)
                reply.ok()
            } catch {
                reply.error(error)
            }
        }
    }

    func fallocate(_ reply: consuming FUSEReply, ino: UInt64, mode: Int32, offset: Int64, length: Int64) {
        guard offset >= 0, length > 0 else {
            reply.error(.invalid)
            return
        }
        // A disk's blocks are its image's to allocate: callers fall back to writing (zeros).
        if RawViewInode(ino) != nil { return reply.error(.notSupported) }
        let keepSize = mode & Int32(CSVFS_FALLOC_KEEP_SIZE) != 0
        let kind: FallocateMode
        switch mode & ~Int32(CSVFS_FALLOC_KEEP_SIZE) {
        case 0: kind = .allocate(keepSize: keepSize)
        case Int32(CSVFS_FALLOC_PUNCH_HOLE) where keepSize: kind = .punchHole
        case Int32(CSVFS_FALLOC_ZERO_RANGE): kind = .zeroRange(keepSize: keepSize)
        default:
            reply.error(.notSupported)
            return
        }
        guard offset <= Int64.max - length else {
            reply.error(.fileTooBig)
            return
        }
        perform(reply) { () throws(Errno) in
            try data.fallocate(ino, offset..<(offset + length), mode: kind)
        }
    }

    // MARK: directories

    func readdir(_ reply: consuming FUSEReply, ino: UInt64, size: Int, offset: Int64, plus: Bool) {
        if let raw = RawViewInode(ino) { return rawReaddir(reply, raw, size: size, offset: offset, plus: plus) }
        let ticket = cache.ticket()
        do {
            // Each entry needs at least 24 (plain) or 152 (plus) bytes; ask for about what fits.
            let limit = max(1, size / (plus ? 160 : 32))
            let entries = try service.readdir(ino, after: offset, limit: limit, plus: plus)
            for entry in entries where entry.name != [46] && entry.name != [46, 46] {
                if let attributes = entry.attributes { disks.names.saw(attributes.ino, parent: ino, name: entry.name) }
            }
            reply.directory(entries, size: size, plus: plus) { attributes in
                FUSEAttributes.entry(attributes, timeout: cache.entryTimeout(since: ticket),
                                     attributeTimeout: cache.attributeTimeout(attributes.ino, since: ticket))
            }
        } catch {
            reply.error(error)
        }
    }

    // MARK: extended attributes

    /// POSIX ACLs (system.*) and SELinux labels are not supported. Saying so (EOPNOTSUPP) also lets tools
    /// such as `ls -l` stop asking for them file after file, which would cost two round trips per entry.
    static func isUnsupported(_ name: [UInt8]) -> Bool {
        name.starts(with: Array("system.".utf8)) || name == Array("security.selinux".utf8)
    }

    func setxattr(_ reply: consuming FUSEReply, ino: UInt64, name: [UInt8], value: [UInt8], flags: Int32) {
        if RawViewInode(ino) != nil { return reply.error(.notPermitted) }
        if Self.isUnsupported(name) {
            reply.error(.notSupported)
            return
        }
        perform(reply) { () throws(Errno) in
            try disks.setXattr(ino, name: name, value: value, create: flags & 1 != 0, replace: flags & 2 != 0)
        }
    }

    func getxattr(_ reply: consuming FUSEReply, ino: UInt64, name: [UInt8], size: Int) {
        if RawViewInode(ino) != nil { return reply.error(.noData) }
        if Self.isUnsupported(name) {
            reply.error(.notSupported)
            return
        }
        do {
            let value = try disks.getXattr(ino, name: name)
            if size == 0 {
                reply.xattrSize(value.count)
            } else if value.count > size {
                reply.error(.range)
            } else {
                reply.bytes(value)
            }
        } catch {
            reply.error(error)
        }
    }

    func listxattr(_ reply: consuming FUSEReply, ino: UInt64, size: Int) {
        do {
            let list: [UInt8] = RawViewInode(ino) != nil ? [] : try disks.listXattrs(ino).flatMap { $0 + [UInt8(0)] }
            if size == 0 {
                reply.xattrSize(list.count)
            } else if list.count > size {
                reply.error(.range)
            } else {
                reply.bytes(list)
            }
        } catch {
            reply.error(error)
        }
    }

    func removexattr(_ reply: consuming FUSEReply, ino: UInt64, name: [UInt8]) {
        if RawViewInode(ino) != nil { return reply.error(.notPermitted) }
        if Self.isUnsupported(name) {
            reply.error(.notSupported)
            return
        }
        perform(reply) { () throws(Errno) in try disks.removeXattr(ino, name: name) }
    }
}

/// Carries a reply into async work exactly once.
final class PendingReply: @unchecked Sendable {
    // @unchecked: taken once, by the one closure that owns this box.
    private var reply: FUSEReply?

    init(_ reply: consuming FUSEReply) { self.reply = consume reply }

    func take() -> FUSEReply {
        guard let reply = reply.take() else { fatalError("reply taken twice") }
        return reply
    }
}
