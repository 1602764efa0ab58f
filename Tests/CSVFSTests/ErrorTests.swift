import Foundation
import Glibc
import Testing

/// Each error case with its errno: ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENAMETOOLONG.
extension Mounted {
    @Suite struct ErrorTests {
        @Test(arguments: MetadataMode.allCases) func missingEntriesGiveENOENT(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let missing = volume.path("missing")
                #expect(statErrno(missing) == ENOENT)
                let openMissing = openErrno(missing, O_RDONLY, 0)
                #expect(openMissing == ENOENT)
                #expect(errnoOf { unlink(missing) } == ENOENT)
                #expect(errnoOf { rmdir(missing) } == ENOENT)
                #expect(errnoOf { chmod(missing, 0o644) } == ENOENT)
                #expect(errnoOf { truncate(missing, 0) } == ENOENT)
                #expect(errnoOf { link(missing, volume.path("other")) } == ENOENT)
                #expect(errnoOf { mkdir(volume.path("missing/child"), 0o755) } == ENOENT)
                let createInMissing = openErrno(volume.path("missing/child"), O_CREAT | O_WRONLY, 0o644)
                #expect(createInMissing == ENOENT)
                #expect(readlinkErrno(missing) == ENOENT)
                // An entry that existed and was removed is gone for lookups too (no stale cache).
                try writeFile(volume.path("gone"), [1])
                try sys("unlink") { unlink(volume.path("gone")) }
                let openGone = openErrno(volume.path("gone"), O_RDONLY, 0)
                #expect(openGone == ENOENT)
            }
        }

        @Test(arguments: MetadataMode.allCases) func existingEntriesGiveEEXIST(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("file"), dir = volume.path("dir")
                try writeFile(file, Array("keep".utf8))
                try sys("mkdir") { mkdir(dir, 0o755) }
                #expect(errnoOf { mkdir(dir, 0o755) } == EEXIST)
                #expect(errnoOf { mkdir(file, 0o755) } == EEXIST)
                #expect(openErrno(file, O_CREAT | O_EXCL | O_WRONLY, 0o644) == EEXIST)
                #expect(errnoOf { link(file, dir) } == EEXIST)
                #expect(errnoOf { symlink("x", file) } == EEXIST)
                #expect(errnoOf { mkfifo(file, 0o644) } == EEXIST)
                #expect(renameErrno(dir, file, flags: LinuxFlags.renameNoReplace) == EEXIST)
                #expect(try readFile(file) == Array("keep".utf8), "failed calls left the file alone")
            }
        }

        @Test(arguments: MetadataMode.allCases) func nonEmptyDirectoryGivesENOTEMPTY(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try sys("mkdir") { mkdir(volume.path("d"), 0o755) }
                try writeFile(volume.path("d/f"), [])
                #expect(errnoOf { rmdir(volume.path("d")) } == ENOTEMPTY)
                try sys("mkdir") { mkdir(volume.path("e"), 0o755) }
                #expect(renameErrno(volume.path("e"), volume.path("d")) == ENOTEMPTY)
                // A directory holding only a subdirectory is not empty either.
                try sys("unlink") { unlink(volume.path("d/f")) }
                try sys("mkdir") { mkdir(volume.path("d/sub"), 0o755) }
                #expect(errnoOf { rmdir(volume.path("d")) } == ENOTEMPTY)
                try sys("rmdir") { rmdir(volume.path("d/sub")) }
                #expect(errnoOf { rmdir(volume.path("d")) } == 0)
            }
        }

        @Test(arguments: MetadataMode.allCases) func directoriesGiveEISDIR(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let dir = volume.path("dir")
                try sys("mkdir") { mkdir(dir, 0o755) }
                try writeFile(volume.path("file"), [])
                #expect(openErrno(dir, O_WRONLY, 0) == EISDIR)
                #expect(openErrno(dir, O_RDWR, 0) == EISDIR)
                #expect(errnoOf { unlink(dir) } == EISDIR)
                #expect(renameErrno(volume.path("file"), dir) == EISDIR)
                let fd = try sys("open dir") { open(dir, O_RDONLY) }
                defer { close(fd) }
                var byte: UInt8 = 0
                #expect(errnoOf { read(fd, &byte, 1) } == EISDIR)
            }
        }

        @Test(arguments: MetadataMode.allCases) func nameOf256BytesGivesENAMETOOLONG(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let longest = String(repeating: "n", count: 255), tooLong = String(repeating: "n", count: 256)
                try writeFile(volume.path(longest), Array("255 is fine".utf8))
                #expect(try readFile(volume.path(longest)) == Array("255 is fine".utf8))
                #expect(try listDirectory(volume.mountpoint) == [longest])
                #expect(openErrno(volume.path(tooLong), O_CREAT | O_WRONLY, 0o644) == ENAMETOOLONG)
                #expect(errnoOf { mkdir(volume.path(tooLong), 0o755) } == ENAMETOOLONG)
                #expect(errnoOf { symlink("x", volume.path(tooLong)) } == ENAMETOOLONG)
                #expect(errnoOf { link(volume.path(longest), volume.path(tooLong)) } == ENAMETOOLONG)
                #expect(renameErrno(volume.path(longest), volume.path(tooLong)) == ENAMETOOLONG)
                #expect(statErrno(volume.path(tooLong)) == ENAMETOOLONG)
                #expect(try listDirectory(volume.mountpoint) == [longest], "nothing was created")
            }
        }
    }
}
