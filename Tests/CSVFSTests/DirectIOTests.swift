import CSVFS
import Foundation
import Glibc
import Testing

/// File data goes to the LUN with O_DIRECT, unaligned writes too (read-modify-write of whole blocks), so the
/// host's page cache of the LUN never holds file data that another host's writes would make stale.
extension Mounted {
    @Suite struct DirectIOTests {
        static let region = 1 << 20

        /// How many pages of `range` of the file at `path` sit in the page cache (mincore of a mapping).
        func cachedPages(_ path: String, _ range: Range<Int64>) throws -> Int {
            let fd = try sys("open \(path)") { open(path, O_RDONLY) }
            defer { close(fd) }
            let length = Int(range.count)
            guard let mapping = mmap(nil, length, PROT_READ, MAP_SHARED, fd, off_t(range.lowerBound)), mapping != MAP_FAILED else {
                throw SyscallError(call: "mmap", code: errno)
            }
            defer { munmap(mapping, length) }
            let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
            var resident = [UInt8](repeating: 0, count: (length + pageSize - 1) / pageSize)
            try sys("mincore") { mincore(mapping, length, &resident) }
            return resident.filter { $0 & 1 != 0 }.count
        }

        /// Evicts the LUN image's clean pages from the page cache.
        func evict(_ path: String) throws {
            let fd = try sys("open \(path)") { open(path, O_RDONLY) }
            defer { close(fd) }
            let rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            if rc != 0 { throw SyscallError(call: "posix_fadvise", code: rc) }
        }

        func directRead(_ path: String, count: Int, at offset: Int64) throws -> [UInt8] {
            let fd = try sys("open O_DIRECT \(path)") { open(path, O_RDONLY | LinuxFlags.oDirect) }
            defer { close(fd) }
            let buffer = try AlignedBuffer(size: count)
            let n = pread(fd, buffer.pointer, count, off_t(offset))
            if n != count { throw SyscallError(call: "pread O_DIRECT", code: n < 0 ? errno : EIO) }
            return buffer.bytes
        }

        /// With the default engine (AIO) and with the thread-per-request one.
        @Test(arguments: ["", "io=threads"])
        func unalignedOverwritesBypassTheLUNPageCache(option: String) throws {
            try withVolume(mounted: false) { volume in
                try volume.mount(options: option.isEmpty ? [] : [option])
                let device = try LUNDevice.open(volume.lun, readOnly: true)
                let dataOffset = try device.superblock().0.dataOffset
                device.close()
                let file = volume.path("file")
                var model = patternBytes(count: 40_000, seed: 7)
                try writeFile(file, model, fsync: true)
                try evict(volume.lun)
                // The first file of a new volume starts the data region.
                let lunRange = dataOffset..<(dataOffset + Int64(Self.region))
                try #require(try cachedPages(volume.lun, lunRange) == 0, "the LUN's data pages were evicted")

                let fd = try sys("open \(file)") { open(file, O_WRONLY) }
                defer { close(fd) }
                // Inside one block, across a block boundary, across several, and past the end of the file.
                for (offset, count, seed) in [(5000, 10, 1), (8190, 5, 2), (10_001, 9000, 3), (39_000, 3000, 4)] as [(Int, Int, UInt64)] {
                    let bytes = patternBytes(count: count, seed: seed + 100)
                    try writeAll(fd, bytes, at: offset)
                    if model.count < offset + count { model += repeatElement(0, count: offset + count - model.count) }
                    model.replaceSubrange(offset..<(offset + count), with: bytes)
                }
                #expect(try cachedPages(volume.lun, lunRange) == 0, "file data sits in the LUN's page cache after unaligned writes (\(option))")
                let onLUN = try directRead(volume.lun, count: (model.count + 4095) / 4096 * 4096, at: dataOffset)
                #expect(Array(onLUN.prefix(model.count)) == model, "the LUN holds the written bytes right after the writes returned")
                #expect(try readFile(file) == model)
            }
        }

        @Test func anUnknownIOEngineIsRefused() throws {
            try withVolume(mounted: false) { volume in
                let result = try volume.csvfs(["mount", volume.lun, volume.mountpoint, "-o", "io=uring"])
                #expect(!result.succeeded)
                #expect(result.stderr.contains("io is one of aio, threads"), "\(result)")
                #expect(!volume.isMounted)
            }
        }
    }
}
