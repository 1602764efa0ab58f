import Foundation
import Glibc
import Testing
import TestSupport

/// Real I/O errors of the LUN (see `FaultyLUN`), as the callers of the filesystem see them.
extension Mounted {
    @Suite struct IOErrorTests {
        static let size = 64 << 10

        /// Writes `size` bytes of a pattern to a new file at `path` and makes them durable.
        func writeDurably(_ path: String, seed: UInt64) throws -> [UInt8] {
            let data = patternBytes(count: Self.size, seed: seed)
            try writeFile(path, data)
            let fd = try sys("open") { open(path, O_RDONLY) }
            defer { close(fd) }
            try sys("fsync") { fsync(fd) }
            return data
        }

        /// A read the LUN fails with EIO fails with EIO, even where the host's page cache holds the block (the
        /// buffered descriptor would have answered from there for a failed device).
        @Test func readErrorReachesTheCaller() throws {
            try withFaultyVolume { volume, lun in
                let layout = try lun.superblock()
                let file = volume.path("file")
                let data = try writeDurably(file, seed: 1)
                // The first file of a new volume starts the data region; its blocks now sit in the page cache.
                let device = try sys("open \(lun.device)") { open(lun.device, O_RDONLY) }
                defer { close(device) }
                var cached = [UInt8](repeating: 0, count: Self.size)
                _ = cached.withUnsafeMutableBytes { pread(device, $0.baseAddress, Self.size, off_t(layout.dataOffset)) }
                try #require(cached == data, "the file's blocks start the data region")

                try lun.fail(.read, in: layout.dataOffset..<(layout.dataOffset + layout.dataLength))
                let buffer = try AlignedBuffer(size: Self.size)
                let fd = try sys("open O_DIRECT") { open(file, O_RDONLY | LinuxFlags.oDirect) }
                defer { close(fd) }
                let failure = errnoOf { pread(fd, buffer.pointer, Self.size, 0) }
                #expect(failure == EIO, "read of a failing LUN: \(errnoName(failure))")
                #expect(lun.failures(.read) > 0, "the LUN was asked")
                lun.heal(.read)
                #expect(pread(fd, buffer.pointer, Self.size, 0) == Self.size)
                #expect(buffer.bytes == data)
            }
        }

        /// A disk's `user.vhd.*` attributes read the image from the LUN: a read that fails is getxattr's EIO,
        /// not an answer that the file is no image (ENODATA); once the LUN heals, the facts are there.
        @Test func aFailedReadOfAnImageIsTheAttributesEIO() throws {
            try withFaultyVolume { volume, lun in
                let layout = try lun.superblock()
                let image = volume.path("disk.vhd")
                let made = try runProcess("/usr/bin/qemu-img", ["create", "-q", "-f", "vpc", image, "8M"], timeout: 60)
                try #require(made.succeeded, "\(made)")
                try lun.fail(.read, in: layout.dataOffset..<(layout.dataOffset + layout.dataLength))
                if case .failure(let error) = getxattr(image, "user.vhd.format") {
                    #expect(error.code == EIO, "getxattr of a failing LUN: \(error)")
                } else {
                    Issue.record("getxattr answered while the LUN fails every read")
                }
                lun.heal(.read)
                #expect(getxattr(image, "user.vhd.format") == .success(Array("vhd".utf8)))
            }
        }

        /// A write the LUN fails with EIO fails with EIO (the buffered descriptor would have left it in the page
        /// cache, to be lost at writeback).
        @Test func writeErrorReachesTheCaller() throws {
            try withFaultyVolume { volume, lun in
                let layout = try lun.superblock()
                let file = volume.path("file")
                _ = try writeDurably(file, seed: 2)
                try lun.fail(.write, in: layout.dataOffset..<(layout.dataOffset + layout.dataLength))
                let buffer = try AlignedBuffer(size: Self.size)
                buffer.fill(with: patternBytes(count: Self.size, seed: 3))
                let fd = try sys("open O_DIRECT") { open(file, O_RDWR | LinuxFlags.oDirect) }
                defer { close(fd) }
                let failure = errnoOf { pwrite(fd, buffer.pointer, Self.size, 0) }
                #expect(failure == EIO, "overwrite on a failing LUN: \(errnoName(failure))")
                #expect(lun.failures(.write) > 0, "the LUN was asked")
                lun.heal(.write)
                #expect(pwrite(fd, buffer.pointer, Self.size, 0) == Self.size)
            }
        }

        /// The once-a-second flush of the LUN fails: the next fsync of each file it covered (written, or made)
        /// reports EIO, once, as Linux reports writeback errors; a file open meanwhile and unchanged is not told.
        /// A write into new space fails itself: its blocks are marked written only after a flush that covers its
        /// data (else a power cut could show what the blocks held before), so it changes nothing and says so.
        @Test func failedFlushIsReportedToTheNextFsyncOfEachFileItCoveredOnce() throws {
            try withFaultyVolume { volume, lun in
                let names = ["grown", "overwritten", "untouched"]
                var before: [String: [UInt8]] = [:]
                for (seed, name) in names.enumerated() { before[name] = try writeDurably(volume.path(name), seed: UInt64(4 + seed)) }
                var fds: [String: Int32] = [:]
                defer { for fd in fds.values { close(fd) } }
                for name in names { fds[name] = try sys("open \(name)") { open(volume.path(name), O_RDWR) } }

                // Failing before the writes, so the first flush that covers them fails.
                try lun.fail(.flush)
                let more = patternBytes(count: Self.size, seed: 9)
                #expect(more.withUnsafeBytes { pwrite(fds["overwritten"]!, $0.baseAddress, Self.size, 0) } == Self.size)
                fds["created"] = try sys("create") { open(volume.path("created"), O_RDWR | O_CREAT, 0o644) }
                let grow = errnoOf { more.withUnsafeBytes { pwrite(fds["grown"]!, $0.baseAddress, Self.size, off_t(Self.size)) } }
                #expect(grow == EIO, "a write into new space while the LUN's flushes fail: \(errnoName(grow))")
                // Two failed flushes: the second began after all the changes (the first may have begun between).
                #expect(lun.waitForFailures(.flush, count: 2, timeout: 10), "the periodic flush ran twice within 10 s")
                lun.heal(.flush)

                for name in ["overwritten", "created"] {
                    let first = errnoOf { fsync(fds[name]!) }, second = errnoOf { fsync(fds[name]!) }
                    #expect(first == EIO, "\(name): first fsync after the failed flush: \(errnoName(first))")
                    #expect(second == 0, "\(name): second fsync: \(errnoName(second))")
                }
                for name in ["grown", "untouched"] {
                    let synced = errnoOf { fsync(fds[name]!) }
                    #expect(synced == 0, "\(name): the failed flush covered no change of it: \(errnoName(synced))")
                }
                // The failed write changed nothing: the file is as it was, and the same write now succeeds.
                #expect(try readFile(volume.path("grown")) == before["grown"]!)
                #expect(more.withUnsafeBytes { pwrite(fds["grown"]!, $0.baseAddress, Self.size, off_t(Self.size)) } == Self.size)
                try sys("fsync grown") { fsync(fds["grown"]!) }
                #expect(try readFile(volume.path("grown")) == before["grown"]! + more)
            }
        }
    }
}
