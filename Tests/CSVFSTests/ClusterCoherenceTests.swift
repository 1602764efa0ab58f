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

        /// The metadata calls of `kinds` a node has sent to the coordinator (lookups and stats by default),
        /// from its metrics.
        static func readCalls(_ port: Int, _ kinds: [String] = ["lookup", "attributes"]) throws -> Double {
            let metrics = try MetricsTests.fetch("http://127.0.0.1:\(port)/metrics")
            try #require(metrics.succeeded, "\(metrics)")
            return kinds.reduce(0) { total, kind in
                total + (MetricsTests.sample(metrics.stdout, "csvfs_metadata_rpcs_total{kind=\"\(kind)\"}") ?? 0)
            }
        }

        /// O_DIRECT reads and overwrites of written blocks on a node that holds the file's lock take their
        /// map from the node's cache: no call to the coordinator. The other node's reads, stat, writes and
        /// truncate see every one of them, and this node sees theirs.
        @Test func readsAndOverwritesOfWrittenBlocksAskTheCoordinatorNothing() throws {
            try MetricsTests.withSecondNodeExportingMetrics { volume, second, port in
                let one = volume.mountpoint, size = 1 << 20, block = 4096
                var model = patternBytes(count: size, seed: 1)
                try writeFile(second + "/disk", model)
                let fd = try sys("open O_DIRECT") { open(second + "/disk", O_RDWR | LinuxFlags.oDirect) }
                defer { close(fd) }
                let buffer = try AlignedBuffer(size: block)
                func readBlock(_ index: Int) throws -> [UInt8] {
                    let n = Glibc.pread(fd, buffer.pointer, block, off_t(index * block))
                    try #require(n == block, "pread O_DIRECT: \(n), errno \(errno)")
                    return buffer.bytes
                }
                func overwrite(_ index: Int, seed: UInt64) throws {
                    let bytes = patternBytes(count: block, seed: seed)
                    buffer.fill(with: bytes)
                    let n = pwrite(fd, buffer.pointer, block, off_t(index * block))
                    try #require(n == block, "pwrite O_DIRECT: \(n), errno \(errno)")
                    model.replaceSubrange(index * block..<(index + 1) * block, with: bytes)
                }
                // The first reads fetch the map, under the lock the write above left here.
                _ = try readBlock(0)
                _ = try readBlock(100)
                let before = try Self.readCalls(port, ["mapping", "prepareWrite"])
                let toldBefore = try Self.readCalls(port, ["completeWrite"])
                let start = ContinuousClock.now
                for index in 0..<(size / block) {
                    #expect(try readBlock(index) == Array(model[index * block..<(index + 1) * block]), "block \(index)")
                }
                for index in stride(from: 0, to: size / block, by: 3) { try overwrite(index, seed: UInt64(index + 10)) }
                let seconds = (ContinuousClock.now - start).components.seconds
                let calls = try Self.readCalls(port, ["mapping", "prepareWrite"]) - before
                let told = try Self.readCalls(port, ["completeWrite"]) - toldBefore
                #expect(calls == 0, "\(size / block) reads and \(size / block / 3 + 1) overwrites sent \(calls) map calls")
                // The mount's once-a-second sync tells the coordinator the new mtime: one call a second, not one a write.
                #expect(told <= Double(seconds + 2), "\(told) completeWrite calls in \(seconds) s")

                // The other node sees the overwrites and their mtime: this node's lock goes to it first.
                let written = try lstatOrThrow(second + "/disk").st_mtim
                #expect(try readFile(one + "/disk") == model, "the other node reads the overwrites")
                let seen = try lstatOrThrow(one + "/disk").st_mtim
                #expect(seen.tv_sec == written.tv_sec && seen.tv_nsec == written.tv_nsec, "mtime here \(written), there \(seen)")
                // And this node sees the other's changes through its cached map's file.
                let out = try sys("open") { open(one + "/disk", O_WRONLY) }
                try writeAll(out, patternBytes(count: block, seed: 99), at: 5 * block)
                close(out)
                model.replaceSubrange(5 * block..<6 * block, with: patternBytes(count: block, seed: 99))
                #expect(try readBlock(5) == patternBytes(count: block, seed: 99), "the other node's overwrite")
                #expect(truncate(one + "/disk", off_t(8 * block)) == 0)
                #expect(Glibc.pread(fd, buffer.pointer, block, off_t(10 * block)) == 0, "past the other node's truncate")
                #expect(try readBlock(7) == Array(model[7 * block..<8 * block]))
            }
        }

        /// A node that is not the coordinator answers repeated stats from its own cache while it holds the
        /// inodes' DLM licences, and drops exactly what another node changes: the change is seen at once.
        @Test func repeatedStatsAreServedUnderLicencesUntilAnotherNodeChangesThem() throws {
            try MetricsTests.withSecondNodeExportingMetrics { volume, second, port in
                let one = volume.mountpoint, files = 100
                try sys("mkdir") { mkdir(one + "/d", 0o755) }
                for index in 0..<files { try writeFile(one + "/d/f\(index)", [UInt8(index)]) }
                func statAll() throws {
                    for index in 0..<files { _ = try lstatOrThrow(second + "/d/f\(index)") }
                }
                // The first pass asks for the licences; what it read before they were granted is not kept.
                try statAll()
                usleep(300_000)
                try statAll()
                let before = try Self.readCalls(port)
                for _ in 0..<3 { try statAll() }
                let repeated = try Self.readCalls(port) - before
                #expect(repeated < Double(files) / 10, "three passes of \(files) stats sent \(repeated) lookups and stats")

                #expect(chmod(one + "/d/f5", 0o600) == 0)
                try writeFile(one + "/d/f7", Array("seven".utf8))
                #expect(try lstatOrThrow(second + "/d/f5").st_mode & 0o7777 == 0o600, "the other node's chmod")
                #expect(try lstatOrThrow(second + "/d/f7").st_size == 5, "the other node's write")
                #expect(try readFile(second + "/d/f7") == Array("seven".utf8))
                #expect(unlink(one + "/d/f9") == 0)
                #expect(statErrno(second + "/d/f9") == ENOENT, "the other node's unlink")
                #expect(try lstatOrThrow(second + "/d/f8").st_mode & 0o7777 != 0o600, "an unchanged neighbour")
            }
        }

        /// A listing with attributes on a node that is not the coordinator is read under the licences of the
        /// directory and its entries: the stat of every entry that follows (`ls -l`) is answered from the
        /// node's cache, and what another node changes afterwards is seen at once.
        @Test func aListingLeavesItsEntriesCachedAndAnotherNodesChangesAreSeen() throws {
            try MetricsTests.withSecondNodeExportingMetrics { volume, second, port in
                let one = volume.mountpoint, files = 1000
                try sys("mkdir") { mkdir(one + "/d", 0o755) }
                for index in 0..<files { try writeFile(one + "/d/f\(index)", Array(repeating: 1, count: index)) }
                let before = try Self.readCalls(port)
                let names = try FileManager.default.contentsOfDirectory(atPath: second + "/d")
                #expect(names.count == files)
                for name in names {
                    let index = try #require(Int(name.dropFirst()), "\(name)")
                    #expect(try lstatOrThrow(second + "/d/" + name).st_size == index, "\(name)")
                }
                let calls = try Self.readCalls(port) - before
                #expect(calls < Double(files) / 20, "a listing and \(files) stats sent \(calls) lookups and stats")

                #expect(chmod(one + "/d/f5", 0o600) == 0)
                try writeFile(one + "/d/f7", Array("seven".utf8))
                try writeFile(one + "/d/new", [1])
                #expect(unlink(one + "/d/f9") == 0)
                #expect(try lstatOrThrow(second + "/d/f5").st_mode & 0o7777 == 0o600, "the other node's chmod")
                #expect(try lstatOrThrow(second + "/d/f7").st_size == 5, "the other node's write")
                #expect(statErrno(second + "/d/f9") == ENOENT, "the other node's unlink")
                let after = Set(try FileManager.default.contentsOfDirectory(atPath: second + "/d"))
                #expect(after.contains("new") && !after.contains("f9") && after.count == files, "the listing after the changes")
                #expect(try lstatOrThrow(second + "/d/new").st_size == 1)
            }
        }

        /// A node left alone skips the locks and caches nothing of its own; when another node joins, every
        /// change made meanwhile is seen there, and what the newcomer changes is seen by the first node, even
        /// for files whose metadata the first node had cached while they shared the volume before.
        @Test func changesMadeAloneAreSeenByTheNextNodeToJoin() throws {
            try withVolume { volume in
                try ClusterJoinTests.withSecondMountpoint(volume) { second in
                    let one = volume.mountpoint
                    func join() throws {
                        let joined = try volume.csvfs(["mount", volume.lun, second], timeout: 90)
                        try #require(joined.succeeded, "\(joined)")
                    }
                    try join()
                    for name in ["a", "b", "c"] { try writeFile(second + "/" + name, Array(name.utf8)) }
                    // The first node reads them under licences, and caches them.
                    for pass in 0..<2 {
                        for name in ["a", "b", "c", "absent"] { _ = statErrno(one + "/" + name) }
                        if pass == 0 { usleep(300_000) }  // the licences the first pass asked for are granted
                    }
                    let left = try volume.csvfs(["unmount", second])
                    try #require(left.succeeded, "\(left)")
                    usleep(300_000)  // the first node hears that it is alone

                    #expect(chmod(one + "/a", 0o600) == 0)
                    try writeFile(one + "/b", Array("bigger b".utf8))
                    #expect(unlink(one + "/c") == 0)
                    try writeFile(one + "/absent", Array("now here".utf8))
                    try join()
                    // What the first node cached before it was alone is gone: it changed the files without locks.
                    #expect(try lstatOrThrow(one + "/a").st_mode & 0o7777 == 0o600, "its own chmod, after the join")
                    #expect(statErrno(one + "/c") == ENOENT, "its own unlink, after the join")
                    #expect(try lstatOrThrow(one + "/absent").st_size == 8, "its own create, after the join")
                    #expect(try lstatOrThrow(second + "/a").st_mode & 0o7777 == 0o600, "the chmod made alone")
                    #expect(try readFile(second + "/b") == Array("bigger b".utf8), "the write made alone")
                    #expect(statErrno(second + "/c") == ENOENT, "the unlink made alone")
                    #expect(try readFile(second + "/absent") == Array("now here".utf8), "the create made alone")

                    #expect(chmod(second + "/b", 0o640) == 0)
                    try writeFile(second + "/a", Array("a from the newcomer".utf8))
                    #expect(unlink(second + "/absent") == 0)
                    #expect(try lstatOrThrow(one + "/b").st_mode & 0o7777 == 0o640, "the newcomer's chmod")
                    #expect(try readFile(one + "/a") == Array("a from the newcomer".utf8), "the newcomer's write")
                    #expect(statErrno(one + "/absent") == ENOENT, "the newcomer's unlink")
                }
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

        /// A new coordinator hears of the files the other nodes have open before it deletes what an earlier one
        /// left unlinked: a file unlinked while open keeps its data across the failover, until its last close.
        @Test func anUnlinkedOpenFileKeepsItsDataAcrossACoordinatorFailover() throws {
            try withVolume(.follower) { volume in
                try ClusterJoinTests.withSecondMountpoint(volume) { third in
                    let joined = try volume.csvfs(["mount", volume.lun, third], timeout: 90)
                    try #require(joined.succeeded, "\(joined)")
                    let data = patternBytes(count: 300_000, seed: 6)
                    try writeFile(volume.mountpoint + "/kept", data)
                    let fd = try sys("open") { open(volume.mountpoint + "/kept", O_RDWR) }
                    defer { close(fd) }
                    #expect(unlink(third + "/kept") == 0)
                    try volume.killCoordinator()
                    FileLockTests.expectNewCoordinator(volume, through: third)
                    // Its blocks must not go to another file: the new coordinator kept the inode.
                    // (Freed blocks are reused only after a sync: two fsync'd writes would take them.)
                    try writeFile(third + "/filler", patternBytes(count: 600_000, seed: 7), fsync: true)
                    try writeFile(third + "/filler2", patternBytes(count: 600_000, seed: 9), fsync: true)
                    #expect(try Self.pread(fd, 300_000, at: 0) == data, "the open file keeps its data")
                    try writeAll(fd, patternBytes(count: 4096, seed: 8), at: 300_000)
                    #expect(try Self.pread(fd, 4096, at: 300_000) == patternBytes(count: 4096, seed: 8), "and takes writes")
                    #expect(try readFile(third + "/filler") == patternBytes(count: 600_000, seed: 7))
                    let names = try FileManager.default.contentsOfDirectory(atPath: volume.mountpoint)
                    #expect(!names.contains("kept"), "\(names)")
                }
            }
        }
    }
}
