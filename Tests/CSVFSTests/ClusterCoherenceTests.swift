import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// Read-after-write across two nodes' mounts, through the kernel: once a call returned on one node, the
/// other sees it on its next call, also through a file it already has open and after a failed lookup.
extension Mounted {
    @Suite struct ClusterCoherenceTests {
        /// `body(one, two)` with the two mountpoints of one two-node cluster (coordinator, other node).
        static func withTwoNodes(_ body: (String, String) throws -> Void) throws {
            try withVolume(.follower) { volume in try body(volume.coordinatorMountpoint, volume.mountpoint) }
        }

        static func pread(_ fd: Int32, _ count: Int, at offset: Int) throws -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: count)
            let n = try sys("pread") { buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, off_t(offset)) } }
            return Array(buffer[0..<n])
        }

        @Test(arguments: [0, 1]) func anOpenFileSeesTheOtherNodesWritesAndSize(_ writer: Int) throws {
            try Self.withTwoNodes { one, two in
                let nodes = [one, two], reader = nodes[1 - writer], writing = nodes[writer]
                try writeFile(writing + "/f", patternBytes(count: 8192, seed: 1))
                let fd = try sys("open") { open(reader + "/f", O_RDONLY) }
                defer { close(fd) }
                #expect(try Self.pread(fd, 8192, at: 0) == patternBytes(count: 8192, seed: 1), "the page cache now holds the old bytes")
                let out = try sys("open") { open(writing + "/f", O_WRONLY) }
                try writeAll(out, patternBytes(count: 8192, seed: 2), at: 0)
                try writeAll(out, patternBytes(count: 100, seed: 3), at: 8192)
                close(out)
                #expect(try Self.pread(fd, 8192, at: 0) == patternBytes(count: 8192, seed: 2), "the other node's overwrite, through the open file")
                var status = stat()
                #expect(fstat(fd, &status) == 0 && status.st_size == 8292, "the other node's append: size \(status.st_size)")
                #expect(try Self.pread(fd, 200, at: 8192) == patternBytes(count: 100, seed: 3))
            }
        }

        @Test func namesAndAttributesChangedOnOneNodeAreSeenOnTheOther() throws {
            try Self.withTwoNodes { one, two in
                // A failed lookup is not remembered: the name created on the other node is found at once.
                #expect(statErrno(two + "/new") == ENOENT)
                try writeFile(one + "/new", Array("new".utf8))
                #expect(try readFile(two + "/new") == Array("new".utf8))
                #expect(chmod(one + "/new", 0o600) == 0)
                #expect(try lstatOrThrow(two + "/new").st_mode & 0o7777 == 0o600)
                #expect(rename(two + "/new", two + "/renamed") == 0)
                #expect(statErrno(one + "/new") == ENOENT)
                #expect(try readFile(one + "/renamed") == Array("new".utf8))
                #expect(link(one + "/renamed", one + "/second-name") == 0)
                #expect(try lstatOrThrow(two + "/renamed").st_nlink == 2)
                #expect(setxattrErrno(two + "/renamed", "user.tag", [7]) == 0)
                #expect(getxattr(one + "/second-name", "user.tag") == .success([7]))
                #expect(truncate(two + "/renamed", 1) == 0)
                #expect(try readFile(one + "/second-name") == Array("n".utf8))
                #expect(unlink(one + "/renamed") == 0 && unlink(one + "/second-name") == 0)
                #expect(try listDirectory(two).filter { !$0.hasPrefix(".") } == [])
            }
        }

        @Test func aFileUnlinkedOnOneNodeKeepsItsDataWhileOpenOnTheOther() throws {
            try Self.withTwoNodes { one, two in
                let data = patternBytes(count: 100_000, seed: 4)
                try writeFile(one + "/kept", data)
                let fd = try sys("open") { open(two + "/kept", O_RDONLY) }
                #expect(unlink(one + "/kept") == 0)
                #expect(statErrno(two + "/kept") == ENOENT, "the name is gone everywhere")
                // Its blocks must not go to another file while the other node still reads it.
                try writeFile(one + "/filler", patternBytes(count: 200_000, seed: 5))
                #expect(try Self.pread(fd, 100_000, at: 0) == data, "the open file keeps its data")
                close(fd)
            }
        }
    }
}
