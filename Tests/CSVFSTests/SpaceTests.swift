import Foundation
import Glibc
import Testing

/// A full volume: ENOSPC, nothing else damaged, and freeing space makes writes work again.
extension Mounted {
    @Suite struct SpaceTests {
        static let mib = 1 << 20

        /// Writes `data` to a new file and fsyncs it; returns 0 or the first errno (write, fsync or close).
        static func writeErrno(_ path: String, _ data: [UInt8]) -> Int32 {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { return errno }
            do {
                try writeAll(fd, data, at: 0)
                try sys("fsync") { fsync(fd) }
            } catch let error as SyscallError {
                close(fd)
                return error.code
            } catch {
                close(fd)
                return EIO
            }
            return errnoOf { close(fd) }
        }

        @Test(arguments: MetadataMode.allCases) func fallocateBeyondFreeSpaceFailsAndLeaksNothing(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode, size: "64M") { volume in
                let file = volume.path("too-big")
                try writeFile(file, [])
                var before = statvfs()
                try sys("statvfs") { statvfs(volume.mountpoint, &before) }
                let free = Int(before.f_bavail) * Int(before.f_frsize)
                #expect(fallocateErrno(file, mode: 0, offset: 0, length: free + 8 * Self.mib) == ENOSPC)
                #expect(try lstatOrThrow(file).st_size == 0, "a failed fallocate does not grow the file")
                #expect(syncfsErrno(volume.mountpoint) == 0)
                var after = statvfs()
                let deadline = Date().addingTimeInterval(5)
                repeat {
                    try sys("statvfs") { statvfs(volume.mountpoint, &after) }
                    if after.f_bavail >= before.f_bavail { break }
                    usleep(100_000)
                } while Date() < deadline
                #expect(after.f_bavail >= before.f_bavail, "no space leaked: \(before.f_bavail) then \(after.f_bavail) blocks")
                // What does fit still fits.
                #expect(fallocateErrno(file, mode: 0, offset: 0, length: free / 2) == 0)
                #expect(try lstatOrThrow(file).st_size == Int64(free / 2))
            }
        }

        @Test(arguments: MetadataMode.allCases) func fullMetadataGivesENOSPCAndRecovers(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode, size: "64M") { volume in
                // Long names and 2 KiB attributes fill the metadata area long before the data area.
                let padding = [UInt8](repeating: 0x76, count: 2000)
                var created: [String] = []
                var failure: Int32 = 0
                let deadline = Date().addingTimeInterval(120)
                while failure == 0 && created.count < 50_000 && Date() < deadline {
                    let name = volume.path(String(repeating: "m", count: 200) + "-\(created.count)")
                    failure = openErrno(name, O_CREAT | O_WRONLY, 0o644)
                    if failure == 0 {
                        failure = setxattrErrno(name, "user.pad", padding)
                        created.append(name)
                    }
                }
                #expect(failure == ENOSPC, "a full metadata area gives ENOSPC, got \(errnoName(failure)) after \(created.count) files")
                #expect(try lstatOrThrow(created[0]).st_nlink == 1)
                #expect(try getxattr(created[0], "user.pad").get() == padding, "earlier entries intact")

                for name in created.prefix(200) { try sys("unlink") { unlink(name) } }
                #expect(syncfsErrno(volume.mountpoint) == 0)
                for index in 0..<20 {
                    #expect(openErrno(volume.path("after-\(index)"), O_CREAT | O_WRONLY, 0o644) == 0)
                }
                try volume.remount()
                #expect(try listDirectory(volume.mountpoint).count == created.count - 200 + 20)
            }
        }

        @Test(arguments: MetadataMode.allCases) func fullVolumeGivesENOSPCAndKeepsEverythingElse(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode, size: "64M") { volume in
                var kept: [String: [UInt8]] = [:]
                var failure: Int32 = 0
                for index in 0..<200 {
                    let name = "fill-\(index)", data = patternBytes(count: Self.mib, seed: UInt64(60 + index))
                    failure = Self.writeErrno(volume.path(name), data)
                    if failure != 0 { break }
                    kept[name] = data
                }
                #expect(failure == ENOSPC, "filling a 64 MiB volume ends with ENOSPC, got \(errnoName(failure))")
                #expect(kept.count >= 16, "at least part of the volume was usable: \(kept.count) MiB")
                var status = statvfs()
                try sys("statvfs") { statvfs(volume.mountpoint, &status) }
                #expect(Int64(status.f_bavail) * Int64(status.f_frsize) < Int64(Self.mib), "statfs shows the volume full")
                // Metadata operations that need no data space still work on a full volume.
                let mkdirOnFullVolume = errnoOf { mkdir(volume.path("still-works"), 0o755) }
                #expect(mkdirOnFullVolume == 0, "mkdir on a full data region: \(errnoName(mkdirOnFullVolume))")
                for (name, data) in kept { #expect(try readFile(volume.path(name)) == data, "\(name) intact") }

                // Free two files: writes succeed again.
                let victims = kept.keys.sorted().prefix(2)
                for name in victims {
                    try sys("unlink") { unlink(volume.path(name)) }
                    kept[name] = nil
                }
                #expect(syncfsErrno(volume.mountpoint) == 0)
                let again = patternBytes(count: Self.mib, seed: 999)
                var retried: Int32 = ENOSPC
                let deadline = Date().addingTimeInterval(10)
                while retried == ENOSPC && Date() < deadline {
                    retried = Self.writeErrno(volume.path("after-free"), again)
                    if retried == ENOSPC { usleep(200_000) }
                }
                #expect(retried == 0, "a 1 MiB write after freeing 2 MiB: \(errnoName(retried))")
                #expect(try readFile(volume.path("after-free")) == again)

                try volume.unmount()
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "fsck after ENOSPC: \(fsck)")
                try volume.mount()
                for (name, data) in kept { #expect(try readFile(volume.path(name)) == data, "\(name) after remount") }
            }
        }
    }
}
