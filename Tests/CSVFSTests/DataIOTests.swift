import Foundation
import Glibc
import Testing

/// read/write/pread/pwrite, 1 MiB requests, O_DIRECT, O_APPEND, fsync, concurrent I/O, data across remounts.
extension Mounted {
    @Suite struct DataIOTests {
        @Test(arguments: MetadataMode.allCases) func oneMebibyteInOneWriteAndOneRead(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("big")
                let data = patternBytes(count: 1 << 20, seed: 10)
                let fd = try sys("open") { open(file, O_RDWR | O_CREAT | O_TRUNC, 0o644) }
                defer { close(fd) }
                #expect(data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == 1 << 20)
                try sys("fsync") { fsync(fd) }
                var back = [UInt8](repeating: 0, count: 1 << 20)
                #expect(back.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) } == 1 << 20)
                #expect(back == data)
                #expect(try lstatOrThrow(file).st_size == 1 << 20)
            }
        }

        @Test(arguments: MetadataMode.allCases) func directIOWritesAndReadsAlignedMebibyte(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("direct")
                let size = 1 << 20
                let data = patternBytes(count: 3 * size, seed: 11)
                let write = try AlignedBuffer(size: size), read = try AlignedBuffer(size: size)
                let fd = try sys("open O_DIRECT") { open(file, O_RDWR | O_CREAT | LinuxFlags.oDirect, 0o644) }
                defer { close(fd) }
                for chunk in 0..<3 {
                    write.fill(with: Array(data[(chunk * size)..<((chunk + 1) * size)]))
                    #expect(pwrite(fd, write.pointer, size, off_t(chunk * size)) == size)
                }
                try sys("fsync") { fsync(fd) }
                for chunk in [2, 0, 1] {
                    #expect(pread(fd, read.pointer, size, off_t(chunk * size)) == size)
                    #expect(read.bytes == Array(data[(chunk * size)..<((chunk + 1) * size)]), "chunk \(chunk)")
                }
                // The same bytes through the page cache.
                #expect(try readFile(file) == data)
                // A 4 KiB direct write in the middle replaces exactly that block.
                write.fill(with: [UInt8](repeating: 0x5A, count: size))
                #expect(pwrite(fd, write.pointer, 4096, off_t(size + 8192)) == 4096)
                var expected = data
                expected.replaceSubrange((size + 8192)..<(size + 12288), with: [UInt8](repeating: 0x5A, count: 4096))
                #expect(pread(fd, read.pointer, size, off_t(size)) == size)
                #expect(read.bytes == Array(expected[size..<(2 * size)]))
            }
        }

        @Test(arguments: MetadataMode.allCases) func pwriteAtOffsetsLeavesZeroHoles(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("holes")
                let fd = try sys("open") { open(file, O_RDWR | O_CREAT, 0o644) }
                defer { close(fd) }
                let a = patternBytes(count: 5000, seed: 12), b = patternBytes(count: 333, seed: 13)
                try writeAll(fd, a, at: 100)
                try writeAll(fd, b, at: 3 << 20 + 17)
                var expected = [UInt8](repeating: 0, count: 3 << 20 + 17 + 333)
                expected.replaceSubrange(100..<5100, with: a)
                expected.replaceSubrange((3 << 20 + 17)..., with: b)
                #expect(try lstatOrThrow(file).st_size == Int64(expected.count))
                #expect(try readFile(file) == expected)
                // Overwrite across the first write's end.
                let c = patternBytes(count: 1000, seed: 14)
                try writeAll(fd, c, at: 4600)
                expected.replaceSubrange(4600..<5600, with: c)
                #expect(try readRange(file, offset: 0, count: 8192) == Array(expected[0..<8192]))
            }
        }

        @Test(arguments: MetadataMode.allCases) func appendModeWritesAtTheEnd(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("log")
                try writeFile(file, Array("one\n".utf8))
                let fd = try sys("open") { open(file, O_WRONLY | O_APPEND) }
                for line in ["two\n", "three\n"] {
                    let bytes = Array(line.utf8)
                    #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count)
                }
                close(fd)
                #expect(String(decoding: try readFile(file), as: UTF8.self) == "one\ntwo\nthree\n")
            }
        }

        @Test(arguments: MetadataMode.allCases) func fsyncFdatasyncSyncfsSucceed(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("synced")
                let fd = try sys("open") { open(file, O_RDWR | O_CREAT, 0o644) }
                defer { close(fd) }
                try writeAll(fd, patternBytes(count: 300_000, seed: 15), at: 0)
                #expect(errnoOf { fsync(fd) } == 0)
                #expect(errnoOf { fdatasync(fd) } == 0)
                #expect(errnoOf { LibC.syncfs(fd) } == 0)
                let dir = try sys("open dir") { open(volume.mountpoint, O_RDONLY | O_DIRECTORY) }
                defer { close(dir) }
                #expect(errnoOf { fsync(dir) } == 0, "fsyncdir")
            }
        }

        @Test(arguments: MetadataMode.allCases) func concurrentWritersEachKeepTheirBytes(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let threads = 4, size = 4 << 20
                let failures = ConcurrentFailures()
                let group = DispatchGroup()
                for index in 0..<threads {
                    let file = volume.path("parallel-\(index)")
                    DispatchQueue.global().async(group: group) {
                        do {
                            let data = patternBytes(count: size, seed: UInt64(100 + index))
                            // Interleaved 64 KiB writes, backwards, so requests from all threads overlap.
                            let fd = try sys("open") { open(file, O_RDWR | O_CREAT | O_TRUNC, 0o644) }
                            defer { close(fd) }
                            for offset in stride(from: size - 65536, through: 0, by: -65536) {
                                try writeAll(fd, Array(data[offset..<(offset + 65536)]), at: offset)
                            }
                            try sys("fsync") { fsync(fd) }
                            if try readFile(file) != data { failures.add("\(file): content differs") }
                        } catch {
                            failures.add("\(file): \(error)")
                        }
                    }
                }
                #expect(group.wait(timeout: .now() + 120) == .success, "writers finished")
                #expect(failures.all.isEmpty, "\(failures.all)")
            }
        }

        @Test(arguments: MetadataMode.allCases) func sharedMmapWritesReachTheFile(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("mapped"), size = 256 << 10
                try writeFile(file, [UInt8](repeating: 0, count: size))
                let fd = try sys("open") { open(file, O_RDWR) }
                let map = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                close(fd)
                guard let map, map != MAP_FAILED else {
                    Issue.record("mmap: \(errnoName(errno))")
                    return
                }
                let data = patternBytes(count: size, seed: 16)
                data.withUnsafeBytes { map.copyMemory(from: $0.baseAddress!, byteCount: size) }
                #expect(msync(map, size, MS_SYNC) == 0)
                munmap(map, size)
                #expect(try readFile(file) == data)
                try volume.remount()
                #expect(try readFile(file) == data, "mmap'd writes are on the volume")
            }
        }

        @Test(arguments: MetadataMode.allCases) func offsetsBeyondFourGiBWork(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("huge-sparse")
                let offset = 5 << 30 + 12345
                let data = patternBytes(count: 10_000, seed: 17)
                let fd = try sys("open") { open(file, O_RDWR | O_CREAT, 0o644) }
                try writeAll(fd, data, at: offset)
                try sys("fsync") { fsync(fd) }
                close(fd)
                let status = try lstatOrThrow(file)
                #expect(status.st_size == Int64(offset + data.count))
                #expect(status.st_blocks * 512 < 1 << 20, "5 GiB of hole on a 512 MiB volume stays unallocated")
                #expect(try readRange(file, offset: offset - 100, count: 10_100) == [UInt8](repeating: 0, count: 100) + data)
                try volume.remount()
                #expect(try readRange(file, offset: offset, count: 10_000) == data)
            }
        }

        @Test(arguments: MetadataMode.allCases) func openTruncAndReplacingAnOpenFile(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("victim")
                let old = patternBytes(count: 50_000, seed: 18)
                try writeFile(file, old)
                let reader = try sys("open") { open(file, O_RDONLY) }
                defer { close(reader) }
                // Replace the name while a descriptor is open: the descriptor keeps the old inode's bytes.
                try writeFile(volume.path("replacement"), Array("new".utf8))
                #expect(renameErrno(volume.path("replacement"), file) == 0)
                #expect(try readAll(reader) == old)
                #expect(try readFile(file) == Array("new".utf8))
                // O_TRUNC empties an existing file.
                let fd = try sys("open O_TRUNC") { open(file, O_WRONLY | O_TRUNC) }
                close(fd)
                #expect(try lstatOrThrow(file).st_size == 0)
            }
        }

        @Test(arguments: MetadataMode.allCases) func dataSurvivesUnmountAndRemount(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                var expected: [String: [UInt8]] = [:]
                try sys("mkdir") { mkdir(volume.path("dir"), 0o755) }
                for (index, size) in [0, 1, 4095, 4096, 4097, 65536, 1_000_001, 5 << 20].enumerated() {
                    let name = "dir/file-\(size)"
                    expected[name] = patternBytes(count: size, seed: UInt64(20 + index))
                    try writeFile(volume.path(name), expected[name]!)
                }
                try volume.unmount()
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
                try volume.mount()
                #expect(try listDirectory(volume.path("dir")) == expected.keys.map { String($0.dropFirst(4)) }.sorted())
                for (name, data) in expected {
                    #expect(try lstatOrThrow(volume.path(name)).st_size == Int64(data.count))
                    #expect(try readFile(volume.path(name)) == data, "\(name)")
                }
            }
        }
    }
}

/// Failure messages collected from worker threads.
final class ConcurrentFailures: Sendable {
    private let messages = Locked<[String]>([])
    func add(_ message: String) { messages.withLock { $0.append(message) } }
    var all: [String] { messages.withLock { $0 } }
}
