import Foundation
import Glibc
import Testing

/// getattr/setattr: chmod, chown, truncate, utimens, and statfs numbers.
extension Mounted {
    @Suite struct AttributeTests {
        @Test(arguments: MetadataMode.allCases) func chmodChangesPermissionBits(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("f"), dir = volume.path("d")
                try writeFile(file, [1])
                try sys("mkdir") { mkdir(dir, 0o755) }
                for mode: mode_t in [0o600, 0o4755, 0o000, 0o1777, 0o640] {
                    try sys("chmod") { chmod(file, mode) }
                    #expect(try lstatOrThrow(file).st_mode & 0o7777 == mode)
                    #expect(fileType(try lstatOrThrow(file)) == S_IFREG)
                }
                try sys("chmod dir") { chmod(dir, 0o1711) }
                #expect(try lstatOrThrow(dir).st_mode & 0o7777 == 0o1711)
                let fd = try sys("open") { open(file, O_RDONLY) }
                try sys("fchmod") { fchmod(fd, 0o604) }
                close(fd)
                try volume.remount()
                #expect(try lstatOrThrow(file).st_mode & 0o7777 == 0o604)
                #expect(try lstatOrThrow(dir).st_mode & 0o7777 == 0o1711)
            }
        }

        @Test(arguments: MetadataMode.allCases) func chownChangesOwnerAndGroup(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("owned")
                try writeFile(file, [1])
                try sys("symlink") { symlink("owned", volume.path("link")) }
                try sys("chown") { chown(file, 1234, 5678) }
                var status = try lstatOrThrow(file)
                #expect(status.st_uid == 1234 && status.st_gid == 5678)
                try sys("chown gid only") { chown(file, uid_t.max, 42) }
                status = try lstatOrThrow(file)
                #expect(status.st_uid == 1234 && status.st_gid == 42)
                try sys("lchown") { lchown(volume.path("link"), 77, 88) }
                let link = try lstatOrThrow(volume.path("link"))
                #expect(link.st_uid == 77 && link.st_gid == 88)
                #expect(try lstatOrThrow(file).st_uid == 1234, "lchown does not follow the link")
                try volume.remount()
                status = try lstatOrThrow(file)
                #expect(status.st_uid == 1234 && status.st_gid == 42)
            }
        }

        @Test(arguments: MetadataMode.allCases) func truncateShrinksAndGrowsWithZeros(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("t")
                let data = patternBytes(count: 100_000, seed: 30)
                try writeFile(file, data)
                try sys("truncate") { truncate(file, 10_000) }
                #expect(try lstatOrThrow(file).st_size == 10_000)
                #expect(try readFile(file) == Array(data.prefix(10_000)))
                try sys("truncate up") { truncate(file, 300_000) }
                #expect(try lstatOrThrow(file).st_size == 300_000)
                #expect(try readFile(file) == Array(data.prefix(10_000)) + [UInt8](repeating: 0, count: 290_000),
                        "bytes cut off by the shrink must not come back")
                let fd = try sys("open") { open(file, O_RDWR) }
                try sys("ftruncate") { ftruncate(fd, 1) }
                close(fd)
                #expect(try readFile(file) == [data[0]])
                try sys("truncate 0") { truncate(file, 0) }
                #expect(try lstatOrThrow(file).st_size == 0)
                #expect(try readFile(file).isEmpty)
            }
        }

        @Test(arguments: MetadataMode.allCases) func utimensSetsNanosecondTimestamps(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("times")
                try writeFile(file, [1])
                var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789),
                             timespec(tv_sec: 1_200_000_000, tv_nsec: 987_654_321)]
                try sys("utimensat") { utimensat(AT_FDCWD, file, &times, 0) }
                var status = try lstatOrThrow(file)
                #expect(status.st_atim.tv_sec == 1_000_000_000 && status.st_atim.tv_nsec == 123_456_789)
                #expect(status.st_mtim.tv_sec == 1_200_000_000 && status.st_mtim.tv_nsec == 987_654_321)
                try volume.remount()
                status = try lstatOrThrow(file)
                #expect(status.st_mtim.tv_sec == 1_200_000_000 && status.st_mtim.tv_nsec == 987_654_321)

                // UTIME_OMIT keeps atime, UTIME_NOW sets mtime to now.
                var update = [timespec(tv_sec: 0, tv_nsec: LinuxFlags.utimeOmit), timespec(tv_sec: 0, tv_nsec: LinuxFlags.utimeNow)]
                let before = time(nil)
                try sys("utimensat now") { utimensat(AT_FDCWD, file, &update, 0) }
                status = try lstatOrThrow(file)
                #expect(status.st_atim.tv_sec == 1_000_000_000)
                #expect(status.st_mtim.tv_sec >= before - 1 && status.st_mtim.tv_sec <= time(nil) + 1)
            }
        }

        @Test(arguments: MetadataMode.allCases) func writeAndCreateUpdateTimestamps(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("stamped")
                try writeFile(file, [1])
                var old = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
                try sys("utimensat") { utimensat(AT_FDCWD, file, &old, 0) }
                try sys("utimensat dir") { utimensat(AT_FDCWD, volume.mountpoint, &old, 0) }
                let fd = try sys("open") { open(file, O_WRONLY) }
                try writeAll(fd, [2, 3], at: 1)
                try sys("fsync") { fsync(fd) }
                close(fd)
                let now = time(nil)
                let status = try lstatOrThrow(file)
                #expect(status.st_mtim.tv_sec >= now - 5, "write updates mtime")
                #expect(status.st_ctim.tv_sec >= now - 5, "write updates ctime")
                try writeFile(volume.path("new"), [])
                #expect(try lstatOrThrow(volume.mountpoint).st_mtim.tv_sec >= now - 5, "create updates the parent's mtime")
            }
        }

        @Test(arguments: MetadataMode.allCases) func statfsReportsTheVolumeAndTracksUsage(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode, size: "512M") { volume in
                var before = statvfs()
                try sys("statvfs") { statvfs(volume.mountpoint, &before) }
                let total = Int64(before.f_blocks) * Int64(before.f_frsize)
                #expect(total > 256 << 20 && total <= 512 << 20, "data space of a 512 MiB volume: \(total)")
                #expect(before.f_namemax == 255)
                #expect(before.f_bfree <= before.f_blocks && before.f_bavail <= before.f_bfree)
                #expect(before.f_files > 0 && before.f_ffree > 0)

                let fd = try sys("open") { open(volume.path("filler"), O_RDWR | O_CREAT, 0o644) }
                try writeAll(fd, patternBytes(count: 32 << 20, seed: 31), at: 0)
                try sys("fsync") { fsync(fd) }
                close(fd)
                for index in 0..<20 { try writeFile(volume.path("small-\(index)"), [1]) }
                var after = statvfs()
                try sys("statvfs") { statvfs(volume.mountpoint, &after) }
                let used = (Int64(before.f_bfree) - Int64(after.f_bfree)) * Int64(after.f_frsize)
                #expect(used >= 32 << 20 && used < 40 << 20, "32 MiB written; free space fell by \(used)")
                #expect(Int64(before.f_ffree) - Int64(after.f_ffree) >= 21, "21 inodes created")

                try sys("unlink") { unlink(volume.path("filler")) }
                #expect(syncfsErrno(volume.mountpoint) == 0)
                var freed = statvfs()
                let deadline = Date().addingTimeInterval(10)
                repeat {
                    try sys("statvfs") { statvfs(volume.mountpoint, &freed) }
                    if freed.f_bfree >= before.f_bfree - 256 { break }
                    usleep(100_000)
                } while Date() < deadline
                #expect(Int64(freed.f_bfree) >= Int64(before.f_bfree) - 256, "unlinking the 32 MiB gives the space back")
            }
        }
    }
}
