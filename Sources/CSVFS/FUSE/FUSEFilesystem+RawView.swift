import CFuse
import Dispatch
import Glibc

/// The requests on `.csvfs` and the raw view. The kernel caches none of their names or attributes (a disk's
/// virtual size and its very being an image follow writes on any node), and opens of raw disks bypass its
/// page cache, so every read and write of a disk reaches the node that holds its ownership.
extension FUSEFilesystem {
    /// Names no change may take: anything in the raw view, and `.csvfs` itself.
    static func isReserved(parent: UInt64, name: [UInt8]) -> Bool {
        RawViewInode(parent) != nil || RawViewInode.isControlName(name, in: parent)
    }

    func rawLookup(_ reply: consuming FUSEReply, parent: RawViewInode?, name: [UInt8]) {
        do throws(Errno) {
            let attributes: InodeAttributes
            if let parent { attributes = try rawView.lookup(in: parent, name: name) } else { attributes = try rawView.attributes(.control) }
            reply.entry(attributes, timeout: 0, attributeTimeout: 0)
        } catch {
            if error == .noEntry { reply.negativeEntry(timeout: 0) } else { reply.error(error) }
        }
    }

    func rawGetattr(_ reply: consuming FUSEReply, _ node: RawViewInode) {
        do throws(Errno) {
            reply.attributes(try rawView.attributes(node), timeout: 0)
        } catch {
            reply.error(error)
        }
    }

    /// A disk's size is its image's: only mode, owner and times change, and they change its file.
    func rawSetattr(_ reply: consuming FUSEReply, _ node: RawViewInode, _ changes: AttributeChanges) {
        do throws(Errno) {
            guard case .mirror(let real) = node else { throw Errno.notPermitted }
            var changes = changes
            if let size = changes.size {
                guard size == (try rawView.attributes(node)).size else { throw Errno.notPermitted }
                changes.size = nil
            }
            if changes != AttributeChanges() { _ = try service.setAttributes(real, changes) }
            reply.attributes(try rawView.attributes(node), timeout: 0)
        } catch {
            reply.error(error)
        }
    }

    func rawOpen(_ reply: consuming FUSEReply, _ node: RawViewInode, file: UnsafeMutablePointer<fuse_file_info>) {
        do throws(Errno) {
            let attributes = try rawView.attributes(node)
            guard !attributes.isDirectory, case .mirror(let real) = node else { throw Errno.isDirectory }
            // O_TRUNC would empty the disk: a disk's size is its image's.
            if file.pointee.flags & O_TRUNC != 0, file.pointee.flags & O_ACCMODE != O_RDONLY { throw Errno.notPermitted }
            // The open count keeps an unlinked image's data until the raw view's last handle closes too.
            let handle = try service.opened(real)
            do throws(Errno) {
                try imageClaims.opening(real, handle: handle, writable: file.pointee.flags & O_ACCMODE != O_RDONLY)
                try rawView.disks.opened(real)
            } catch {
                imageClaims.released(handle: handle)
                try? service.released(real, handle: handle)
                throw error
            }
            file.pointee.fh = handle
            file.pointee.direct_io = 1
            reply.open(file)
        } catch {
            reply.error(error)
        }
    }

    func rawRead(_ reply: consuming FUSEReply, _ node: RawViewInode, size: Int, offset: Int64) {
        do throws(Errno) {
            guard case .mirror(let real) = node, offset >= 0 else { throw Errno.invalid }
            reply.bytes(try rawView.disks.read(real, offset: UInt64(offset), count: size))
        } catch {
            reply.error(error)
        }
    }

    func rawWrite(_ reply: consuming FUSEReply, _ node: RawViewInode, source: UnsafeMutablePointer<fuse_bufvec>, offset: Int64) {
        do throws(Errno) {
            guard case .mirror(let real) = node, offset >= 0 else { throw Errno.invalid }
            let count = fuse_buf_size(source)
            let first = source.pointee.buf
            let written: Int
            if source.pointee.count == 1 && first.flags.rawValue & FUSE_BUF_IS_FD.rawValue == 0 {
                written = try rawView.disks.write(real, offset: UInt64(offset), bytes: UnsafeRawBufferPointer(start: first.mem, count: count))
            } else {
                // In a pipe (spliced): copied out first.
                var bytes = [UInt8](repeating: 0, count: count)
                let copied = bytes.withUnsafeMutableBytes { destination in
                    var target = cfuse_bufvec_memory(destination.baseAddress!, count)
                    return fuse_buf_copy(&target, source, fuse_buf_copy_flags(rawValue: 0))
                }
                if copied < 0 { throw Errno(Int32(-copied)) }
                if copied != count { throw Errno.io }
                let disks = rawView.disks
                let result = bytes.withUnsafeBytes { bytes -> Result<Int, Errno> in
                    Result { () throws(Errno) in try disks.write(real, offset: UInt64(offset), bytes: bytes) }
                }
                written = try result.get()
            }
            reply.written(written)
        } catch {
            reply.error(error)
        }
    }

    func rawRelease(_ reply: consuming FUSEReply, _ node: RawViewInode, handle: UInt64) {
        defer { locks.released(handle: handle) }
        rawView.disks.released(node.real)
        imageClaims.released(handle: handle)
        perform(reply) { () throws(Errno) in try service.released(node.real, handle: handle) }
    }

    /// The image flushed and its write session ended, then the LUN: from a worker, as any fsync.
    func rawFsync(_ reply: consuming FUSEReply, _ node: RawViewInode, handle: UInt64) {
        let (disks, service) = (rawView.disks, service)
        let pending = PendingReply(reply)
        DispatchQueue.global().async {
            let reply = pending.take()
            do throws(Errno) {
                try disks.flush(node.real)
                try service.sync(reportingTo: handle)
                reply.ok()
            } catch {
                reply.error(error)
            }
        }
    }

    func rawSeek(_ reply: consuming FUSEReply, _ node: RawViewInode, offset: Int64, data: Bool) {
        do throws(Errno) {
            guard offset >= 0 else { throw Errno(ENXIO) }
            reply.offset(Int64(try rawView.disks.seek(node.real, from: UInt64(offset), data: data)))
        } catch {
            reply.error(error)
        }
    }

    func rawReaddir(_ reply: consuming FUSEReply, _ node: RawViewInode, size: Int, offset: Int64, plus: Bool) {
        do throws(Errno) {
            let entries = try rawView.readdir(node, after: offset, limit: max(1, size / (plus ? 160 : 32)))
            reply.directory(entries, size: size, plus: plus) { attributes in
                FUSEAttributes.entry(attributes, timeout: 0, attributeTimeout: 0)
            }
        } catch {
            reply.error(error)
        }
    }
}
