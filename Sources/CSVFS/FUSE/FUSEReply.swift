import CFuse
import Glibc

/// A FUSE request that must be answered exactly once.
///
/// Non-copyable, and each answer consumes it: answering twice does not compile, and a request dropped
/// unanswered answers EIO itself, so the kernel never waits forever. Sendable so async work can answer it.
public struct FUSEReply: ~Copyable, @unchecked Sendable {
    // @unchecked: libfuse lets any thread send a request's one reply.
    let request: fuse_req_t

    init(_ request: fuse_req_t) { self.request = request }

    deinit { fuse_reply_err(request, EIO) }

    public consuming func error(_ error: Errno) {
        fuse_reply_err(request, error.code)
        discard self
    }

    public consuming func ok() {
        fuse_reply_err(request, 0)
        discard self
    }

    /// For forget: the kernel wants no answer.
    public consuming func none() {
        fuse_reply_none(request)
        discard self
    }

    /// "No such name", cacheable by the kernel for `timeout` seconds (an entry with inode 0).
    consuming func negativeEntry(timeout: Double) {
        var parameters = fuse_entry_param()
        parameters.entry_timeout = timeout
        fuse_reply_entry(request, &parameters)
        discard self
    }

    consuming func entry(_ attributes: InodeAttributes, timeout: Double, attributeTimeout: Double) {
        var parameters = FUSEAttributes.entry(attributes, timeout: timeout, attributeTimeout: attributeTimeout)
        fuse_reply_entry(request, &parameters)
        discard self
    }

    consuming func create(_ attributes: InodeAttributes, timeout: Double, attributeTimeout: Double,
                          file: UnsafePointer<fuse_file_info>) {
        var parameters = FUSEAttributes.entry(attributes, timeout: timeout, attributeTimeout: attributeTimeout)
        fuse_reply_create(request, &parameters, file)
        discard self
    }

    consuming func attributes(_ attributes: InodeAttributes, timeout: Double) {
        var status = FUSEAttributes.stat(attributes)
        fuse_reply_attr(request, &status, timeout)
        discard self
    }

    consuming func open(_ file: UnsafePointer<fuse_file_info>) {
        fuse_reply_open(request, file)
        discard self
    }

    consuming func buffer(_ bytes: UnsafeRawBufferPointer) {
        fuse_reply_buf(request, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        discard self
    }

    consuming func bytes(_ array: [UInt8], count: Int? = nil) {
        let request = request
        _ = array.withUnsafeBytes { fuse_reply_buf(request, $0.baseAddress?.assumingMemoryBound(to: CChar.self), count ?? $0.count) }
        discard self
    }

    consuming func offset(_ offset: Int64) {
        fuse_reply_lseek(request, off_t(offset))
        discard self
    }

    consuming func written(_ count: Int) {
        fuse_reply_write(request, count)
        discard self
    }

    consuming func readlink(_ target: [UInt8]) {
        // fuse_reply_readlink wants a C string; a target is bytes without NUL.
        var bytes = target.map { CChar(bitPattern: $0) }
        bytes.append(0)
        fuse_reply_readlink(request, bytes)
        discard self
    }

    consuming func statfs(_ statistics: VolumeStatistics) {
        var status = statvfs()
        status.f_bsize = UInt(statistics.blockSize)
        status.f_frsize = UInt(statistics.blockSize)
        status.f_blocks = fsblkcnt_t(statistics.totalBlocks)
        status.f_bfree = fsblkcnt_t(statistics.freeBlocks)
        status.f_bavail = fsblkcnt_t(statistics.freeBlocks)
        status.f_files = fsfilcnt_t(statistics.totalInodes)
        status.f_ffree = fsfilcnt_t(statistics.freeInodes)
        status.f_favail = fsfilcnt_t(statistics.freeInodes)
        status.f_namemax = UInt(VolumeStatistics.nameMax)
        fuse_reply_statfs(request, &status)
        discard self
    }

    consuming func lock(_ lock: Glibc.flock) {
        var lock = lock
        fuse_reply_lock(request, &lock)
        discard self
    }

    /// A readdir or readdirplus answer: as many of `entries` as fit in `size` bytes. `parameters` gives an
    /// entry's name and attributes for the kernel to cache (readdirplus); "." and "..", and entries read
    /// without attributes, carry only their inode and type.
    consuming func directory(_ entries: [DirectoryEntry], size: Int, plus: Bool,
                             parameters: (InodeAttributes) -> fuse_entry_param) {
        var buffer = [UInt8](repeating: 0, count: size)
        var used = 0
        let request = request
        buffer.withUnsafeMutableBytes { raw in
            let buffer = raw.bindMemory(to: CChar.self)
            for entry in entries {
                var name = entry.name.map { CChar(bitPattern: $0) }
                name.append(0)
                let remaining = size - used
                let needed: Int
                if plus {
                    var entryParameters = fuse_entry_param()
                    if let attributes = entry.attributes, entry.name != [46], entry.name != [46, 46] {
                        entryParameters = parameters(attributes)
                    } else {
                        entryParameters.attr.st_ino = UInt(entry.ino)
                        entryParameters.attr.st_mode = entry.mode
                    }
                    needed = fuse_add_direntry_plus(request, buffer.baseAddress! + used, remaining, name, &entryParameters,
                                                    off_t(entry.nextCookie))
                } else {
                    var status = Glibc.stat()
                    status.st_ino = UInt(entry.ino)
                    status.st_mode = entry.mode
                    needed = fuse_add_direntry(request, buffer.baseAddress! + used, remaining, name, &status, off_t(entry.nextCookie))
                }
                if needed > remaining { break }
                used += needed
            }
        }
        bytes(buffer, count: used)
    }

    /// For getxattr/listxattr size probes (size 0): how many bytes the value needs.
    consuming func xattrSize(_ count: Int) {
        fuse_reply_xattr(request, count)
        discard self
    }
}
