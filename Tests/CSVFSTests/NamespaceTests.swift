import Foundation
import Glibc
import Testing

/// mkdir/rmdir, create/unlink, link, symlink/readlink, mknod (FIFO), lookup and readdir through the kernel.
extension Mounted {
    @Suite struct NamespaceTests {
        @Test(arguments: MetadataMode.allCases) func mkdirAndRmdirKeepParentLinkCounts(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let root = volume.mountpoint
                let rootLinks = try lstatOrThrow(root).st_nlink
                try sys("mkdir") { mkdir(volume.path("a"), 0o750) }
                try sys("mkdir") { mkdir(volume.path("a/b"), 0o755) }
                let a = try lstatOrThrow(volume.path("a"))
                #expect(fileType(a) == S_IFDIR)
                #expect(a.st_mode & 0o7777 == 0o750)
                #expect(a.st_nlink == 3, "a dir with one subdirectory has 2 + 1 links")
                #expect(try lstatOrThrow(root).st_nlink == rootLinks + 1)
                #expect(try listDirectory(volume.path("a")) == ["b"])

                try sys("rmdir") { rmdir(volume.path("a/b")) }
                #expect(try lstatOrThrow(volume.path("a")).st_nlink == 2)
                try sys("rmdir") { rmdir(volume.path("a")) }
                #expect(errnoOf { access(volume.path("a"), F_OK) } == ENOENT)
                #expect(try lstatOrThrow(root).st_nlink == rootLinks)
            }
        }

        @Test(arguments: MetadataMode.allCases) func createWriteUnlink(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("file")
                let data = patternBytes(count: 10_000, seed: 1)
                try writeFile(file, data, mode: 0o640)
                let status = try lstatOrThrow(file)
                #expect(fileType(status) == S_IFREG)
                #expect(status.st_mode & 0o777 == 0o640)
                #expect(status.st_size == 10_000)
                #expect(status.st_nlink == 1)
                #expect(try readFile(file) == data)
                try sys("unlink") { unlink(file) }
                #expect(errnoOf { access(file, F_OK) } == ENOENT)
                #expect(try listDirectory(volume.mountpoint).isEmpty)
            }
        }

        @Test(arguments: MetadataMode.allCases) func readdirListsEveryEntryWithItsType(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let dir = volume.path("many")
                try sys("mkdir") { mkdir(dir, 0o755) }
                var expected: [String: UInt8] = [:]
                for index in 0..<300 {
                    let name = "entry-\(index)-" + String(repeating: "x", count: index % 40)
                    switch index % 3 {
                    case 0:
                        try writeFile(dir + "/" + name, [UInt8(index % 256)])
                        expected[name] = UInt8(DT_REG)
                    case 1:
                        try sys("mkdir") { mkdir(dir + "/" + name, 0o755) }
                        expected[name] = UInt8(DT_DIR)
                    default:
                        try sys("symlink") { symlink("target-\(index)", dir + "/" + name) }
                        expected[name] = UInt8(DT_LNK)
                    }
                }
                let entries = try readDirectory(dir)
                #expect(entries.filter { $0.name == "." || $0.name == ".." }.count == 2)
                let listed = Dictionary(entries.filter { $0.name != "." && $0.name != ".." }.map { ($0.name, $0.type) },
                                        uniquingKeysWith: { first, _ in first })
                #expect(entries.count == 302, "no duplicates")
                #expect(listed.count == expected.count)
                for (name, type) in expected {
                    let got = listed[name]
                    #expect(got == type || got == UInt8(DT_UNKNOWN), "\(name): d_type \(String(describing: got))")
                }
                // readdirplus path: stat every entry after listing (what ls -l does).
                let statTypes: [UInt8: mode_t] = [UInt8(DT_REG): S_IFREG, UInt8(DT_DIR): S_IFDIR, UInt8(DT_LNK): S_IFLNK]
                for (name, type) in expected {
                    #expect(fileType(try lstatOrThrow(dir + "/" + name)) == statTypes[type], "\(name)")
                }
                #expect(try lstatOrThrow(dir).st_nlink == 2 + 100)
            }
        }

        @Test(arguments: MetadataMode.allCases) func hardLinksShareTheInode(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let first = volume.path("first"), second = volume.path("sub/second")
                try sys("mkdir") { mkdir(volume.path("sub"), 0o755) }
                try writeFile(first, Array("shared".utf8))
                try sys("link") { link(first, second) }
                let a = try lstatOrThrow(first), b = try lstatOrThrow(second)
                #expect(a.st_ino == b.st_ino)
                #expect(a.st_nlink == 2 && b.st_nlink == 2)
                // A write through one name is seen through the other.
                let fd = try sys("open") { open(second, O_WRONLY | O_APPEND) }
                try writeAll(fd, Array(" data".utf8), at: 6)
                close(fd)
                #expect(try readFile(first) == Array("shared data".utf8))
                try sys("unlink") { unlink(first) }
                #expect(try lstatOrThrow(second).st_nlink == 1)
                #expect(try readFile(second) == Array("shared data".utf8))
            }
        }

        @Test(arguments: MetadataMode.allCases) func symlinkAndReadlink(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try writeFile(volume.path("target"), Array("through the link".utf8))
                try sys("symlink") { symlink("target", volume.path("link")) }
                let dangling = "no/such/" + String(repeating: "t", count: 200)
                try sys("symlink") { symlink(dangling, volume.path("dangling")) }

                let link = try lstatOrThrow(volume.path("link"))
                #expect(fileType(link) == S_IFLNK)
                #expect(link.st_size == 6)
                #expect(try readlinkString(volume.path("link")) == "target")
                #expect(try readlinkString(volume.path("dangling")) == dangling)
                #expect(try lstatOrThrow(volume.path("dangling")).st_size == Int64(dangling.utf8.count))
                #expect(try readFile(volume.path("link")) == Array("through the link".utf8))
                var followed = stat()
                #expect(stat(volume.path("link"), &followed) == 0 && fileType(followed) == S_IFREG)
                #expect(statErrno(volume.path("dangling")) == ENOENT)
            }
        }

        @Test(arguments: MetadataMode.allCases) func mknodFIFOCarriesData(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let viaMkfifo = volume.path("fifo1"), viaMknod = volume.path("fifo2")
                try sys("mkfifo") { mkfifo(viaMkfifo, 0o640) }
                try sys("mknod") { mknod(viaMknod, S_IFIFO | 0o600, 0) }
                let first = try lstatOrThrow(viaMkfifo), second = try lstatOrThrow(viaMknod)
                #expect(fileType(first) == S_IFIFO && first.st_mode & 0o777 == 0o640)
                #expect(fileType(second) == S_IFIFO && second.st_mode & 0o777 == 0o600)
                // O_RDWR on a FIFO does not block on Linux: one descriptor writes and reads back.
                let fd = try sys("open fifo") { open(viaMknod, O_RDWR) }
                defer { close(fd) }
                let message = Array("ping".utf8)
                #expect(message.withUnsafeBytes { write(fd, $0.baseAddress, 4) } == 4)
                var buffer = [UInt8](repeating: 0, count: 4)
                #expect(buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4) } == 4)
                #expect(buffer == message)
                #expect(try lstatOrThrow(viaMknod).st_size == 0)
            }
        }

        @Test(arguments: MetadataMode.allCases) func unlinkedOpenFileStaysUsableUntilClosed(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("orphan")
                let data = patternBytes(count: 70_000, seed: 2)
                try writeFile(file, data)
                let fd = try sys("open") { open(file, O_RDWR) }
                try sys("unlink") { unlink(file) }
                #expect(errnoOf { access(file, F_OK) } == ENOENT)
                var status = stat()
                #expect(fstat(fd, &status) == 0)
                #expect(status.st_nlink == 0)
                try writeAll(fd, [1, 2, 3], at: 70_000)
                var back = [UInt8](repeating: 0, count: 70_003)
                #expect(back.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) } == 70_003)
                #expect(back == data + [1, 2, 3])
                close(fd)
                #expect(try listDirectory(volume.mountpoint).isEmpty)
                // The orphan is released: fsck after unmount finds nothing left over.
                try volume.unmount()
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
            }
        }

        @Test(arguments: MetadataMode.allCases) func lookupsWorkAfterTheKernelForgetsInodes(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                var expected: [String: [UInt8]] = [:]
                for index in 0..<400 {
                    let name = "dir\(index % 10)/file\(index)"
                    if index < 10 { try sys("mkdir") { mkdir(volume.path("dir\(index)"), 0o755) } }
                    expected[name] = patternBytes(count: index * 13, seed: UInt64(index))
                    try writeFile(volume.path(name), expected[name]!)
                }
                // Dropping dentries and inodes makes the kernel send FORGET for them; then every lookup starts over.
                sync()
                try "2\n".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
                for (name, data) in expected.sorted(by: { $0.key < $1.key }) {
                    #expect(try lstatOrThrow(volume.path(name)).st_size == Int64(data.count))
                    #expect(try readFile(volume.path(name)) == data, "\(name)")
                }
            }
        }

        @Test(arguments: MetadataMode.allCases) func removingEntriesWhileReadingTheDirectory(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let dir = volume.path("big")
                try sys("mkdir") { mkdir(dir, 0o755) }
                for index in 0..<3000 { try writeFile(dir + "/file-\(index)", []) }
                // What rm -rf does: unlink each entry as readdir returns it, across many getdents calls.
                guard let stream = opendir(dir) else { throw SyscallError(call: "opendir", code: errno) }
                var seen = Set<String>()
                while let entry = readdir(stream) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                    if name == "." || name == ".." { continue }
                    #expect(!seen.contains(name), "\(name) returned twice")
                    seen.insert(name)
                    #expect(errnoOf { unlink(dir + "/" + name) } == 0, "\(name)")
                }
                closedir(stream)
                #expect(seen.count == 3000, "every entry listed once while deleting")
                #expect(try listDirectory(dir).isEmpty)
                #expect(errnoOf { rmdir(dir) } == 0)
            }
        }

        @Test(arguments: MetadataMode.allCases) func hardLinkToADirectoryIsRefused(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try sys("mkdir") { mkdir(volume.path("d"), 0o755) }
                #expect(errnoOf { link(volume.path("d"), volume.path("d2")) } == EPERM)
                #expect(try lstatOrThrow(volume.path("d")).st_nlink == 2)
            }
        }

        @Test(arguments: MetadataMode.allCases) func specialFilesAndLinksSurviveRemount(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try sys("mkfifo") { mkfifo(volume.path("fifo"), 0o640) }
                try sys("symlink") { symlink("fifo", volume.path("link")) }
                try writeFile(volume.path("a"), Array("a".utf8))
                try sys("link") { link(volume.path("a"), volume.path("b")) }
                try volume.remount()
                let fifo = try lstatOrThrow(volume.path("fifo"))
                #expect(fileType(fifo) == S_IFIFO && fifo.st_mode & 0o777 == 0o640)
                #expect(try readlinkString(volume.path("link")) == "fifo")
                #expect(try lstatOrThrow(volume.path("a")).st_nlink == 2)
                #expect(try lstatOrThrow(volume.path("a")).st_ino == (try lstatOrThrow(volume.path("b"))).st_ino)
            }
        }

        /// An inode number names one file over the volume's life: the kernel sends generation 1 for every
        /// inode, so a number handed out again after a restart would let an NFS client or another node holding
        /// the deleted file's number reach the new file.
        @Test(arguments: MetadataMode.allCases) func inodeNumbersOfDeletedFilesAreNotReusedAfterRestart(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                var used: Set<UInt> = [try lstatOrThrow(volume.mountpoint).st_ino]
                for name in ["a", "b", "newest"] {
                    try writeFile(volume.path(name), [])
                    used.insert(try lstatOrThrow(volume.path(name)).st_ino)
                }
                try sys("unlink") { unlink(volume.path("newest")) }
                try volume.remount()
                try writeFile(volume.path("after-remount"), [])
                let afterRemount = try lstatOrThrow(volume.path("after-remount")).st_ino
                #expect(!used.contains(afterRemount), "inode \(afterRemount) was handed out before: \(used.sorted())")
                used.insert(afterRemount)

                try sys("unlink") { unlink(volume.path("after-remount")) }
                try volume.crash()
                try volume.mount()
                try writeFile(volume.path("after-crash"), [])
                let afterCrash = try lstatOrThrow(volume.path("after-crash")).st_ino
                #expect(!used.contains(afterCrash), "inode \(afterCrash) was handed out before: \(used.sorted())")
            }
        }

        @Test(arguments: MetadataMode.allCases) func deepPathsResolve(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                var path = volume.mountpoint
                for depth in 0..<20 {
                    path += "/d\(depth)"
                    try sys("mkdir \(path)") { mkdir(path, 0o755) }
                }
                try writeFile(path + "/leaf", Array("deep".utf8))
                #expect(try readFile(path + "/leaf") == Array("deep".utf8))
                try volume.remount()
                #expect(try readFile(path + "/leaf") == Array("deep".utf8))
            }
        }
    }
}
