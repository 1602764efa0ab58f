import CFuse
import Glibc

/// Conversions from our attributes to the kernel's structures.
enum FUSEAttributes {
    static func stat(_ attributes: InodeAttributes) -> Glibc.stat {
        var status = Glibc.stat()
        status.st_ino = UInt(attributes.ino)
        status.st_mode = attributes.mode
        status.st_nlink = UInt(attributes.nlink)
        status.st_uid = attributes.uid
        status.st_gid = attributes.gid
        status.st_size = Int(attributes.size)
        status.st_blocks = Int((attributes.allocated + 511) / 512)
        status.st_blksize = 4096
        status.st_rdev = UInt(attributes.rdev)
        status.st_atim = timespec(nanoseconds: attributes.atime)
        status.st_mtim = timespec(nanoseconds: attributes.mtime)
        status.st_ctim = timespec(nanoseconds: attributes.ctime)
        return status
    }

    static func entry(_ attributes: InodeAttributes, timeout: Double, attributeTimeout: Double) -> fuse_entry_param {
        var parameters = fuse_entry_param()
        parameters.ino = attributes.ino
        // One generation is enough: the store never hands out an inode number twice (see `inodeNumbersReserved`).
        parameters.generation = 1
        parameters.attr = stat(attributes)
        parameters.attr_timeout = attributeTimeout
        parameters.entry_timeout = timeout
        return parameters
    }

    static func timespec(nanoseconds: Int64) -> Glibc.timespec {
        var seconds = nanoseconds / 1_000_000_000
        var rest = nanoseconds % 1_000_000_000
        if rest < 0 {
            seconds -= 1
            rest += 1_000_000_000
        }
        return Glibc.timespec(tv_sec: Int(seconds), tv_nsec: Int(rest))
    }

    static func nanoseconds(_ time: Glibc.timespec) -> Int64 {
        Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }
}
