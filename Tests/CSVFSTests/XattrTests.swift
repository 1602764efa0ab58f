import Foundation
import Glibc
import Testing

/// getxattr/setxattr/listxattr/removexattr through the kernel.
extension Mounted {
    @Suite struct XattrTests {
        @Test(arguments: MetadataMode.allCases) func setGetListRemove(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("x")
                try writeFile(file, [1])
                let small = Array("value".utf8), empty: [UInt8] = [], large = patternBytes(count: 4000, seed: 40)
                #expect(setxattrErrno(file, "user.small", small) == 0)
                #expect(setxattrErrno(file, "user.empty", empty) == 0)
                #expect(setxattrErrno(file, "user.large", large) == 0)
                #expect(try getxattr(file, "user.small").get() == small)
                #expect(try getxattr(file, "user.empty").get() == empty)
                #expect(try getxattr(file, "user.large").get() == large)
                #expect(LibC.lgetxattr(file, "user.large", nil, 0) == 4000, "size query")
                #expect(Set(try listxattr(file).get()) == ["user.small", "user.empty", "user.large"])

                // Replace the value; it must not keep the old tail.
                #expect(setxattrErrno(file, "user.large", Array("short".utf8)) == 0)
                #expect(try getxattr(file, "user.large").get() == Array("short".utf8))

                #expect(removexattrErrno(file, "user.small") == 0)
                #expect(getxattr(file, "user.small").errno == ENODATA)
                #expect(Set(try listxattr(file).get()) == ["user.empty", "user.large"])
                // Attributes are per inode: the directory has none.
                #expect(try listxattr(volume.mountpoint).get().filter { $0.hasPrefix("user.") }.isEmpty)
            }
        }

        @Test(arguments: MetadataMode.allCases) func createAndReplaceFlagsAndErrors(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("flags")
                try writeFile(file, [1])
                #expect(setxattrErrno(file, "user.a", [1], flags: LinuxFlags.xattrReplace) == ENODATA)
                #expect(setxattrErrno(file, "user.a", [1], flags: LinuxFlags.xattrCreate) == 0)
                #expect(setxattrErrno(file, "user.a", [2], flags: LinuxFlags.xattrCreate) == EEXIST)
                #expect(setxattrErrno(file, "user.a", [3], flags: LinuxFlags.xattrReplace) == 0)
                #expect(try getxattr(file, "user.a").get() == [3])
                #expect(removexattrErrno(file, "user.missing") == ENODATA)
                #expect(getxattr(volume.path("nofile"), "user.a").errno == ENOENT)
                // A buffer that is too small gives ERANGE.
                #expect(setxattrErrno(file, "user.b", patternBytes(count: 100, seed: 41)) == 0)
                var tiny = [UInt8](repeating: 0, count: 10)
                #expect(errnoOf { tiny.withUnsafeMutableBytes { LibC.lgetxattr(file, "user.b", $0.baseAddress, 10) } } == ERANGE)
            }
        }

        @Test(arguments: MetadataMode.allCases) func xattrLimits(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let file = volume.path("limits")
                try writeFile(file, [])
                #expect(setxattrErrno(file, "user." + String(repeating: "n", count: 250), [1]) == 0, "a 255-byte name")
                #expect(setxattrErrno(file, "user." + String(repeating: "n", count: 251), [1]) == ERANGE, "a 256-byte name")
                let biggest = patternBytes(count: 65536, seed: 42)
                let big = setxattrErrno(file, "user.big", biggest)
                // 64 KiB is Linux's XATTR_SIZE_MAX: the largest value it passes on, and the volume has room for it.
                #expect(big == 0, "64 KiB value: \(errnoName(big))")
                #expect(try getxattr(file, "user.big").get() == biggest)
                #expect(setxattrErrno(file, "user.toobig", patternBytes(count: 65537, seed: 43)) == E2BIG)
                #expect(getxattr(file, "user.toobig").errno == ENODATA)
            }
        }

        @Test(arguments: MetadataMode.allCases) func xattrsOnDirectoriesAndSymlinksPersist(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                let dir = volume.path("dir")
                try sys("mkdir") { mkdir(dir, 0o755) }
                try writeFile(volume.path("file"), [])
                #expect(setxattrErrno(dir, "user.dir", Array("on a directory".utf8)) == 0)
                #expect(setxattrErrno(volume.path("file"), "user.binary", [0, 255, 0, 7]) == 0)
                #expect(setxattrErrno(volume.path("file"), "trusted.root", [9]) == 0, "root may set trusted.*")
                try volume.remount()
                #expect(try getxattr(dir, "user.dir").get() == Array("on a directory".utf8))
                #expect(try getxattr(volume.path("file"), "user.binary").get() == [0, 255, 0, 7])
                #expect(try getxattr(volume.path("file"), "trusted.root").get() == [9])
                // Removing the file removes its attributes with it: a new file of the same name has none.
                try sys("unlink") { unlink(volume.path("file")) }
                try writeFile(volume.path("file"), [])
                #expect(getxattr(volume.path("file"), "user.binary").errno == ENODATA)
            }
        }
    }
}

extension Result where Failure == SyscallError {
    /// The errno of a failure, 0 for success.
    var errno: Int32 {
        if case .failure(let error) = self { return error.code }
        return 0
    }
}
