import Foundation
import Glibc
import Testing

/// fallocate (allocate, keep size, punch hole), sparse files, and no stale bytes from deleted files.
extension Mounted {
    @Suite struct SparseTests {
        static let mib = 1 << 20

        @Test(arguments: MetadataMode.allCases) func sparseRangesStayUnallocated(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("sparse")
                let fd = try sys("open") { open(file, O_RDWR | O_CREAT, 0o644) }
                defer { close(fd) }
                try sys("ftruncate") { ftruncate(fd, off_t(64 * Self.mib)) }
                try sys("fsync") { fsync(fd) }
                var status = try lstatOrThrow(file)
                #expect(status.st_size == Int64(64 * Self.mib))
                #expect(status.st_blocks == 0, "a truncated-up file allocates nothing")
                try writeAll(fd, patternBytes(count: 4096, seed: 50), at: 32 * Self.mib)
                try sys("fsync") { fsync(fd) }
                status = try lstatOrThrow(file)
                #expect(status.st_blocks * 512 >= 4096 && status.st_blocks * 512 <= Self.mib,
                        "one 4 KiB write in a 64 MiB file allocates about 4 KiB, got \(status.st_blocks * 512) bytes")
                #expect(try readRange(file, offset: 31 * Self.mib, count: Self.mib) == [UInt8](repeating: 0, count: Self.mib))
                #expect(try readRange(file, offset: 32 * Self.mib, count: 4096) == patternBytes(count: 4096, seed: 50))
            }
        }

        /// SEEK_DATA / SEEK_HOLE see written blocks as data and holes and unwritten (fallocated) blocks as holes,
        /// so `cp --sparse` and qemu-img keep a sparse file sparse.
        @Test(arguments: MetadataMode.allCases) func seekDataAndHoleFollowTheExtents(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("holes")
                let fd = try sys("open") { open(file, O_RDWR | O_CREAT, 0o644) }
                defer { close(fd) }
                try writeAll(fd, patternBytes(count: 4096, seed: 52), at: Self.mib)
                #expect(fallocateErrno(file, mode: 0, offset: 2 * Self.mib, length: Self.mib) == 0)
                try writeAll(fd, patternBytes(count: 10, seed: 53), at: 3 * Self.mib)
                try sys("ftruncate") { ftruncate(fd, off_t(5 * Self.mib)) }
                let seekData: Int32 = 3, seekHole: Int32 = 4
                #expect(lseek(fd, 0, seekData) == off_t(Self.mib))
                #expect(lseek(fd, off_t(Self.mib + 5), seekHole) == off_t(Self.mib + 4096))
                #expect(lseek(fd, off_t(Self.mib + 4096), seekData) == off_t(3 * Self.mib), "fallocated blocks are a hole")
                #expect(lseek(fd, off_t(3 * Self.mib), seekHole) == off_t(3 * Self.mib + 4096))
                #expect(errnoOf { Int(lseek(fd, off_t(3 * Self.mib + 4096), seekData)) } == ENXIO)
                #expect(errnoOf { Int(lseek(fd, off_t(6 * Self.mib), seekHole)) } == ENXIO)
            }
        }

        @Test(arguments: MetadataMode.allCases) func fallocateReservesZeroedSpace(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("reserved")
                try writeFile(file, [])
                var before = statvfs()
                try sys("statvfs") { statvfs(volume.mountpoint, &before) }
                #expect(fallocateErrno(file, mode: 0, offset: 0, length: 16 * Self.mib) == 0)
                var status = try lstatOrThrow(file)
                #expect(status.st_size == Int64(16 * Self.mib))
                #expect(status.st_blocks * 512 >= Int64(16 * Self.mib))
                var after = statvfs()
                try sys("statvfs") { statvfs(volume.mountpoint, &after) }
                #expect((Int64(before.f_bfree) - Int64(after.f_bfree)) * Int64(after.f_frsize) >= Int64(16 * Self.mib))
                #expect(try readFile(file) == [UInt8](repeating: 0, count: 16 * Self.mib))

                // KEEP_SIZE allocates past the end without changing the size.
                #expect(fallocateErrno(file, mode: LinuxFlags.fallocKeepSize, offset: 16 * Self.mib, length: 4 * Self.mib) == 0)
                status = try lstatOrThrow(file)
                #expect(status.st_size == Int64(16 * Self.mib))
                #expect(status.st_blocks * 512 >= Int64(20 * Self.mib))
                // Writing into the reserved range is read back exactly.
                let data = patternBytes(count: 10_000, seed: 51)
                let fd = try sys("open") { open(file, O_RDWR) }
                try writeAll(fd, data, at: 5000)
                close(fd)
                #expect(try readRange(file, offset: 0, count: 20_000) == [UInt8](repeating: 0, count: 5000) + data + [UInt8](repeating: 0, count: 5000))
            }
        }

        @Test(arguments: MetadataMode.allCases) func punchHoleZeroesAndFreesTheRange(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("punched")
                let data = patternBytes(count: 8 * Self.mib, seed: 52)
                try writeFile(file, data, fsync: true)
                let blocksBefore = try lstatOrThrow(file).st_blocks
                #expect(fallocateErrno(file, mode: LinuxFlags.fallocPunchHole | LinuxFlags.fallocKeepSize,
                                       offset: 2 * Self.mib, length: 3 * Self.mib) == 0)
                // An unaligned punch zeroes partial blocks too.
                #expect(fallocateErrno(file, mode: LinuxFlags.fallocPunchHole | LinuxFlags.fallocKeepSize,
                                       offset: 7 * Self.mib + 100, length: 5000) == 0)
                var expected = data
                expected.replaceSubrange((2 * Self.mib)..<(5 * Self.mib), with: [UInt8](repeating: 0, count: 3 * Self.mib))
                expected.replaceSubrange((7 * Self.mib + 100)..<(7 * Self.mib + 5100), with: [UInt8](repeating: 0, count: 5000))
                let status = try lstatOrThrow(file)
                #expect(status.st_size == Int64(8 * Self.mib), "KEEP_SIZE")
                #expect((blocksBefore - status.st_blocks) * 512 >= Int64(3 * Self.mib), "the punched 3 MiB are freed")
                #expect(try readFile(file) == expected)
                #expect(fallocateErrno(file, mode: LinuxFlags.fallocPunchHole, offset: 0, length: 4096) == EOPNOTSUPP,
                        "punch hole without KEEP_SIZE is invalid")
                try volume.remount()
                #expect(try readFile(file) == expected)
            }
        }

        @Test(arguments: MetadataMode.allCases) func newSpaceNeverShowsDeletedBytes(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode, size: "192M") { volume in
                // Fill most of the data area with a recognisable pattern, then delete it.
                let marker = [UInt8](repeating: 0xA5, count: Self.mib)
                let fd = try sys("open") { open(volume.path("secret"), O_RDWR | O_CREAT, 0o644) }
                for index in 0..<128 { try writeAll(fd, marker, at: index * Self.mib) }
                try sys("fsync") { fsync(fd) }
                close(fd)
                try sys("unlink") { unlink(volume.path("secret")) }
                #expect(syncfsErrno(volume.mountpoint) == 0)
                // The server may release freed space a little later (it makes frees durable each second).
                var status = statvfs()
                let deadline = Date().addingTimeInterval(15)
                repeat {
                    try sys("statvfs") { statvfs(volume.mountpoint, &status) }
                    if Int(status.f_bavail) * Int(status.f_frsize) >= 128 * Self.mib { break }
                    usleep(100_000)
                } while Date() < deadline
                #expect(Int(status.f_bavail) * Int(status.f_frsize) >= 128 * Self.mib, "the deleted 128 MiB are free again")

                // New files over the same space: fallocate'd, sparse, and partly written.
                let reserved = volume.path("reserved"), holey = volume.path("holey")
                try writeFile(reserved, [])
                #expect(fallocateErrno(reserved, mode: 0, offset: 0, length: 64 * Self.mib) == 0)
                var expected = [UInt8](repeating: 0, count: 48 * Self.mib)
                let hfd = try sys("open") { open(holey, O_RDWR | O_CREAT, 0o644) }
                for index in stride(from: 0, to: 48, by: 3) {
                    try writeAll(hfd, [0x11], at: index * Self.mib + 4097)
                    expected[index * Self.mib + 4097] = 0x11
                }
                try sys("ftruncate") { ftruncate(hfd, off_t(48 * Self.mib)) }
                try sys("fsync") { fsync(hfd) }
                close(hfd)
                #expect(!containsByte(try readFile(reserved), 0xA5), "fallocated space shows bytes of the deleted file")
                #expect(try readFile(holey) == expected, "holes and partly written blocks read as zeros")
                try volume.remount()
                #expect(!containsByte(try readFile(reserved), 0xA5))
                #expect(try readFile(holey) == expected)
            }
        }
    }
}
