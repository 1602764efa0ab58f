import CFuse
import Glibc

/// The libfuse low-level operation table. Each entry finds the filesystem through the request's user data
/// and hands it a `FUSEReply`; operations left out answer ENOSYS (libfuse does that for a nil entry).
enum FUSEOperations {
    static func filesystem(_ request: fuse_req_t?) -> FUSEFilesystem {
        Unmanaged<FUSEFilesystem>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    static func make() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, connection in
            Unmanaged<FUSEFilesystem>.fromOpaque(userdata!).takeUnretainedValue().initialize(connection!)
        }
        ops.lookup = { request, parent, name in
            FUSEOperations.filesystem(request).lookup(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!))
        }
        ops.forget = { request, ino, _ in
            FUSEOperations.filesystem(request).forget(ino)
            FUSEReply(request!).none()
        }
        ops.forget_multi = { request, count, forgets in
            let filesystem = FUSEOperations.filesystem(request)
            for index in 0..<count { filesystem.forget(forgets![index].ino) }
            FUSEReply(request!).none()
        }
        ops.getattr = { request, ino, _ in FUSEOperations.filesystem(request).getattr(FUSEReply(request!), ino: ino) }
        ops.setattr = { request, ino, attributes, toSet, _ in
            FUSEOperations.filesystem(request).setattr(FUSEReply(request!), ino: ino, attributes: attributes!.pointee, toSet: toSet)
        }
        ops.readlink = { request, ino in FUSEOperations.filesystem(request).readlink(FUSEReply(request!), ino: ino) }
        ops.mknod = { request, parent, name, mode, rdev in
            let type = mode & UInt32(Glibc.S_IFMT)
            guard type == UInt32(Glibc.S_IFREG) || type == UInt32(Glibc.S_IFIFO) || type == UInt32(Glibc.S_IFSOCK)
                    || type == UInt32(Glibc.S_IFCHR) || type == UInt32(Glibc.S_IFBLK) else {
                FUSEReply(request!).error(.invalid)
                return
            }
            FUSEOperations.filesystem(request).createNode(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!),
                                           mode: mode, rdev: UInt64(rdev), caller: FUSEFilesystem.caller(request!))
        }
        ops.mkdir = { request, parent, name, mode in
            FUSEOperations.filesystem(request).createNode(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!),
                                           mode: (mode & 0o7777) | UInt32(Glibc.S_IFDIR), rdev: 0, caller: FUSEFilesystem.caller(request!))
        }
        ops.symlink = { request, target, parent, name in
            FUSEOperations.filesystem(request).createNode(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!),
                                           mode: UInt32(Glibc.S_IFLNK) | 0o777, rdev: 0, symlinkTarget: FUSEFilesystem.name(target!),
                                           caller: FUSEFilesystem.caller(request!))
        }
        ops.unlink = { request, parent, name in
            FUSEOperations.filesystem(request).unlink(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!))
        }
        ops.rmdir = { request, parent, name in
            FUSEOperations.filesystem(request).rmdir(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!))
        }
        ops.rename = { request, parent, name, newParent, newName, flags in
            FUSEOperations.filesystem(request).rename(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!),
                                       newParent: newParent, newName: FUSEFilesystem.name(newName!), flags: flags)
        }
        ops.link = { request, ino, newParent, newName in
            FUSEOperations.filesystem(request).link(FUSEReply(request!), ino: ino, newParent: newParent, newName: FUSEFilesystem.name(newName!))
        }
        ops.open = { request, ino, file in FUSEOperations.filesystem(request).open(FUSEReply(request!), ino: ino, file: file!) }
        ops.create = { request, parent, name, mode, file in
            FUSEOperations.filesystem(request).create(FUSEReply(request!), parent: parent, name: FUSEFilesystem.name(name!),
                                       mode: mode, caller: FUSEFilesystem.caller(request!), file: file!)
        }
        ops.read = { request, ino, size, offset, _ in
            FUSEOperations.filesystem(request).read(FUSEReply(request!), ino: ino, size: size, offset: Int64(offset))
        }
        // write_buf rather than write: the data is copied once, into an aligned buffer for O_DIRECT.
        ops.write_buf = { request, ino, source, offset, file in
            FUSEOperations.filesystem(request).writeBuffer(FUSEReply(request!), ino: ino, handle: file!.pointee.fh, source: source!,
                                                           offset: Int64(offset))
        }
        // Writes are not buffered here, so a close has no data to flush; FLUSH is where the kernel lets go of a
        // process's POSIX locks when it closes the file (it sends no unlock for them).
        ops.flush = { request, ino, file in
            FUSEOperations.filesystem(request).flush(FUSEReply(request!), ino: RawViewInode.lockedInode(ino), owner: file!.pointee.lock_owner)
        }
        ops.getlk = { request, ino, file, lock in
            FUSEOperations.filesystem(request).getlk(FUSEReply(request!), ino: RawViewInode.lockedInode(ino), file: file!.pointee, lock: lock!)
        }
        ops.setlk = { request, ino, file, lock, sleep in
            FUSEOperations.filesystem(request).setlk(FUSEReply(request!), ino: RawViewInode.lockedInode(ino), file: file!.pointee, lock: lock!.pointee,
                                                     sleep: sleep != 0)
        }
        ops.flock = { request, ino, file, operation in
            FUSEOperations.filesystem(request).flockRequest(FUSEReply(request!), ino: RawViewInode.lockedInode(ino), file: file!.pointee, operation: operation)
        }
        ops.release = { request, ino, file in
            FUSEOperations.filesystem(request).release(FUSEReply(request!), ino: ino, handle: file!.pointee.fh)
        }
        ops.fsync = { request, ino, _, file in
            FUSEOperations.filesystem(request).fsync(FUSEReply(request!), ino: ino, handle: file!.pointee.fh)
        }
        ops.opendir = { request, ino, file in
            let fs = FUSEOperations.filesystem(request)
            do throws(Errno) {
                let attributes: InodeAttributes
                if let raw = RawViewInode(ino) { attributes = try fs.rawView.attributes(raw) } else { attributes = try fs.service.attributes(ino) }
                guard attributes.isDirectory else { throw Errno.notDirectory }
                FUSEReply(request!).open(file!)
            } catch {
                FUSEReply(request!).error(error)
            }
        }
        ops.readdir = { request, ino, size, offset, _ in
            FUSEOperations.filesystem(request).readdir(FUSEReply(request!), ino: ino, size: size, offset: Int64(offset), plus: false)
        }
        ops.readdirplus = { request, ino, size, offset, _ in
            FUSEOperations.filesystem(request).readdir(FUSEReply(request!), ino: ino, size: size, offset: Int64(offset), plus: true)
        }
        ops.releasedir = { request, _, _ in FUSEReply(request!).ok() }
        ops.fsyncdir = { request, ino, _, _ in FUSEOperations.filesystem(request).fsync(FUSEReply(request!), ino: ino, handle: nil) }
        ops.statfs = { request, _ in FUSEOperations.filesystem(request).statfs(FUSEReply(request!)) }
        ops.setxattr = { request, ino, name, value, size, flags in
            let bytes = size > 0 ? Array(UnsafeRawBufferPointer(start: value, count: size)) : []
            FUSEOperations.filesystem(request).setxattr(FUSEReply(request!), ino: ino, name: FUSEFilesystem.name(name!), value: bytes, flags: flags)
        }
        ops.getxattr = { request, ino, name, size in
            FUSEOperations.filesystem(request).getxattr(FUSEReply(request!), ino: ino, name: FUSEFilesystem.name(name!), size: size)
        }
        ops.listxattr = { request, ino, size in FUSEOperations.filesystem(request).listxattr(FUSEReply(request!), ino: ino, size: size) }
        ops.removexattr = { request, ino, name in
            FUSEOperations.filesystem(request).removexattr(FUSEReply(request!), ino: ino, name: FUSEFilesystem.name(name!))
        }
        ops.fallocate = { request, ino, mode, offset, length, _ in
            FUSEOperations.filesystem(request).fallocate(FUSEReply(request!), ino: ino, mode: mode, offset: Int64(offset), length: Int64(length))
        }
        ops.lseek = { request, ino, offset, whence, _ in
            FUSEOperations.filesystem(request).lseek(FUSEReply(request!), ino: ino, offset: Int64(offset), whence: whence)
        }
        return ops
    }
}
