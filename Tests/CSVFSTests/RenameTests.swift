import Foundation
import Glibc
import Testing

/// rename(2) and renameat2 with RENAME_NOREPLACE and RENAME_EXCHANGE.
extension Mounted {
    @Suite struct RenameTests {
        @Test(arguments: MetadataMode.allCases) func renameMovesWithinAndAcrossDirectories(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try sys("mkdir") { mkdir(volume.path("a"), 0o755) }
                try sys("mkdir") { mkdir(volume.path("b"), 0o755) }
                try writeFile(volume.path("a/one"), Array("1".utf8))
                let inode = try lstatOrThrow(volume.path("a/one")).st_ino
                #expect(renameErrno(volume.path("a/one"), volume.path("a/two")) == 0)
                #expect(renameErrno(volume.path("a/two"), volume.path("b/three")) == 0)
                #expect(try listDirectory(volume.path("a")).isEmpty)
                #expect(try listDirectory(volume.path("b")) == ["three"])
                #expect(try lstatOrThrow(volume.path("b/three")).st_ino == inode)
                #expect(try readFile(volume.path("b/three")) == Array("1".utf8))
                // Moving a directory moves its subtree and fixes the parents' link counts.
                try sys("mkdir") { mkdir(volume.path("a/sub"), 0o755) }
                try writeFile(volume.path("a/sub/leaf"), Array("leaf".utf8))
                #expect(renameErrno(volume.path("a/sub"), volume.path("b/moved")) == 0)
                #expect(try readFile(volume.path("b/moved/leaf")) == Array("leaf".utf8))
                #expect(try lstatOrThrow(volume.path("a")).st_nlink == 2)
                #expect(try lstatOrThrow(volume.path("b")).st_nlink == 3)
                try volume.remount()
                #expect(try readFile(volume.path("b/moved/leaf")) == Array("leaf".utf8))
                #expect(try listDirectory(volume.path("b")) == ["moved", "three"])
            }
        }

        @Test(arguments: MetadataMode.allCases) func renameReplacesTheTarget(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try writeFile(volume.path("new"), Array("new".utf8))
                try writeFile(volume.path("old"), Array("old".utf8))
                try sys("link") { link(volume.path("old"), volume.path("old-link")) }
                #expect(renameErrno(volume.path("new"), volume.path("old")) == 0)
                #expect(try readFile(volume.path("old")) == Array("new".utf8))
                #expect(try lstatOrThrow(volume.path("old-link")).st_nlink == 1, "the replaced inode lost a link")
                #expect(try readFile(volume.path("old-link")) == Array("old".utf8))
                #expect(errnoOf { access(volume.path("new"), F_OK) } == ENOENT)
                // A directory may replace an empty directory, not a non-empty one.
                try sys("mkdir") { mkdir(volume.path("d1"), 0o755) }
                try sys("mkdir") { mkdir(volume.path("d2"), 0o755) }
                try sys("mkdir") { mkdir(volume.path("full"), 0o755) }
                try writeFile(volume.path("full/x"), [1])
                #expect(renameErrno(volume.path("d1"), volume.path("d2")) == 0)
                #expect(renameErrno(volume.path("d2"), volume.path("full")) == ENOTEMPTY)
                #expect(renameErrno(volume.path("old"), volume.path("d2")) == EISDIR)
                #expect(renameErrno(volume.path("d2"), volume.path("old")) == ENOTDIR)
                #expect(renameErrno(volume.path("full"), volume.path("full/x/inside")) == ENOTDIR)
                try sys("mkdir") { mkdir(volume.path("full/sub"), 0o755) }
                #expect(renameErrno(volume.path("full"), volume.path("full/sub/inside")) == EINVAL)
                #expect(renameErrno(volume.path("missing"), volume.path("x")) == ENOENT)
                #expect(try listDirectory(volume.mountpoint) == ["d2", "full", "old", "old-link"])
            }
        }

        @Test(arguments: MetadataMode.allCases) func renameNoReplace(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try writeFile(volume.path("a"), Array("a".utf8))
                try writeFile(volume.path("b"), Array("b".utf8))
                #expect(renameErrno(volume.path("a"), volume.path("b"), flags: LinuxFlags.renameNoReplace) == EEXIST)
                #expect(try readFile(volume.path("a")) == Array("a".utf8))
                #expect(try readFile(volume.path("b")) == Array("b".utf8))
                #expect(renameErrno(volume.path("a"), volume.path("c"), flags: LinuxFlags.renameNoReplace) == 0)
                #expect(try listDirectory(volume.mountpoint) == ["b", "c"])
                #expect(try readFile(volume.path("c")) == Array("a".utf8))
            }
        }

        @Test(arguments: MetadataMode.allCases) func renameExchangeSwapsTwoEntries(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try sys("mkdir") { mkdir(volume.path("dir"), 0o755) }
                try sys("mkdir") { mkdir(volume.path("other"), 0o755) }
                try writeFile(volume.path("dir/inside"), Array("inside".utf8))
                try writeFile(volume.path("file"), Array("file".utf8))
                try writeFile(volume.path("other/peer"), Array("peer".utf8))
                let fileInode = try lstatOrThrow(volume.path("file")).st_ino
                let dirInode = try lstatOrThrow(volume.path("dir")).st_ino

                #expect(renameErrno(volume.path("file"), volume.path("other/peer"), flags: LinuxFlags.renameExchange) == 0)
                #expect(try readFile(volume.path("file")) == Array("peer".utf8))
                #expect(try readFile(volume.path("other/peer")) == Array("file".utf8))
                #expect(try lstatOrThrow(volume.path("other/peer")).st_ino == fileInode)

                // A file and a directory swap places; the directory's contents move with it.
                #expect(renameErrno(volume.path("file"), volume.path("dir"), flags: LinuxFlags.renameExchange) == 0)
                #expect(fileType(try lstatOrThrow(volume.path("file"))) == S_IFDIR)
                #expect(try lstatOrThrow(volume.path("file")).st_ino == dirInode)
                #expect(try readFile(volume.path("file/inside")) == Array("inside".utf8))
                #expect(try readFile(volume.path("dir")) == Array("peer".utf8))

                #expect(renameErrno(volume.path("dir"), volume.path("nothing"), flags: LinuxFlags.renameExchange) == ENOENT)
                #expect(renameErrno(volume.path("dir"), volume.path("file"),
                                    flags: LinuxFlags.renameExchange | LinuxFlags.renameNoReplace) == EINVAL)
                try volume.remount()
                #expect(try readFile(volume.path("file/inside")) == Array("inside".utf8))
                #expect(try readFile(volume.path("other/peer")) == Array("file".utf8))
            }
        }
    }
}
