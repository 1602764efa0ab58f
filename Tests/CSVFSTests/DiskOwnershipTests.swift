import Foundation
import Glibc
import Testing
import TestSupport

/// A disk's ownership across two nodes: it moves to whichever node writes (the other flushes first), reads
/// on either node see every write made on the other, and the images below an open child stay read-only.
extension Mounted {
    @Suite struct DiskOwnershipTests {
        static let diskSize = 32 << 20

        /// `body(volume, [coordinator's mountpoint, other node's], )` with a dynamic VHDX `disk.vhdx` (1 MiB blocks).
        static func withDisk(_ body: (TestVolume, [String]) throws -> Void) throws {
            try withVolume(.follower) { volume in
                let nodes = [volume.coordinatorMountpoint, volume.mountpoint]
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M",
                                   nodes[0] + "/disk.vhdx", "\(diskSize)"])
                try body(volume, nodes)
            }
        }

        static func flattened(_ image: String, scratch: URL) throws -> [UInt8] {
            let out = scratch.appendingPathComponent("flat-\(UUID().uuidString.prefix(6)).raw").path
            defer { unlink(out) }
            try DiskTools.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", image, out])
            return try readFile(out)
        }

        /// A writer on each node at once, each on its own blocks of one disk, O_DIRECT, each write read back on
        /// its own node: the ownership goes back and forth under them, and nothing is lost or mixed up.
        @Test func writersOnBothNodesShareOneDisk() throws {
            let seed = SeededRandom.seed(from: "CSVFS_OWNERSHIP_SEED", test: "disk ownership writers")
            try Self.withDisk { volume, nodes in
                let model = Locked([UInt8](repeating: 0, count: Self.diskSize))
                let failures = Locked<[String]>([])
                let finished = DispatchSemaphore(value: 0)
                for node in 0..<2 {
                    let path = nodes[node] + "/.csvfs/raw/disk.vhdx"
                    Thread.detachNewThread {
                        defer { finished.signal() }
                        var random = SeededRandom(seed: seed &+ UInt64(node))
                        do {
                            let fd = try sys("open \(path)") { open(path, O_RDWR | LinuxFlags.oDirect) }
                            defer { close(fd) }
                            let buffer = try AlignedBuffer(size: 1 << 20), back = try AlignedBuffer(size: 1 << 20)
                            for round in 0..<40 {
                                // Node 0 writes the even MiB of the disk, node 1 the odd ones.
                                let block = 2 * Int.random(in: 0..<(Self.diskSize >> 21), using: &random) + node
                                let count = 4096 * Int.random(in: 1...64, using: &random)
                                let offset = (block << 20) + 4096 * Int.random(in: 0...((1 << 20) - count) / 4096, using: &random)
                                let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
                                buffer.fill(with: bytes)
                                guard pwrite(fd, buffer.pointer, count, off_t(offset)) == count else {
                                    throw SyscallError(call: "pwrite (node \(node), round \(round))", code: errno)
                                }
                                model.withLock { $0.replaceSubrange(offset..<offset + count, with: bytes) }
                                guard pread(fd, back.pointer, count, off_t(offset)) == count,
                                      memcmp(back.pointer, buffer.pointer, count) == 0 else {
                                    throw FixtureError("node \(node), round \(round): its own write did not read back")
                                }
                            }
                        } catch {
                            failures.withLock { $0.append("\(error)") }
                        }
                    }
                }
                for _ in 0..<2 { #expect(finished.wait(timeout: .now() + 300) == .success, "the writers finish") }
                #expect(failures.withLock { $0 }.isEmpty, "seed \(seed): \(failures.withLock { $0 })")
                let expected = model.withLock { $0 }
                for node in nodes {
                    #expect(try readFile(node + "/.csvfs/raw/disk.vhdx") == expected, "the disk through \(node) (seed \(seed))")
                }
                let check = try DiskTools.run(["qemu-img", "check", "-f", "vhdx", nodes[0] + "/disk.vhdx"], mustSucceed: false)
                #expect(check.succeeded, "\(check)")
                #expect(try Self.flattened(nodes[0] + "/disk.vhdx", scratch: volume.directory) == expected, "seed \(seed)")
            }
        }

        /// Each write on one node, through the raw view or through the image file itself, is what the other
        /// node's open raw view reads next.
        @Test func aWriteOnOneNodeIsReadOnTheOther() throws {
            try Self.withDisk { volume, nodes in
                let views = try nodes.map { path in try sys("open") { open(path + "/.csvfs/raw/disk.vhdx", O_RDWR) } }
                defer { views.forEach { close($0) } }
                for round in 0..<10 {
                    let writer = round % 2, reader = 1 - writer
                    let bytes = [UInt8](repeating: UInt8(0x40 + round), count: 5000)
                    let offset = (round << 20) + 777
                    try writeAll(views[writer], bytes, at: offset)
                    var back = [UInt8](repeating: 0, count: bytes.count)
                    #expect(pread(views[reader], &back, back.count, off_t(offset)) == back.count)
                    #expect(back == bytes, "round \(round): node \(writer) wrote, node \(reader) read")
                }
                // Through the file itself (qemu-io opens the VHDX): the raw views see it too.
                let wrote = try DiskTools.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x99 20M 64k", nodes[0] + "/disk.vhdx"])
                #expect(wrote.stdout.contains("wrote 65536/65536"))
                for (node, view) in views.enumerated() {
                    var back = [UInt8](repeating: 0, count: 65536)
                    #expect(pread(view, &back, back.count, off_t(20 << 20)) == back.count)
                    #expect(back.allSatisfy { $0 == 0x99 }, "node \(node) reads what qemu-io wrote into the image")
                }
                // The last read took it to the second node (node 2), shared.
                for node in nodes {
                    #expect(try getxattr(node + "/disk.vhdx", "user.vhd.owner").get() == Array("node 2 (reading)".utf8))
                }
            }
        }

        /// The node writing a disk dies (SIGKILL, the coordinator too) with writes it never flushed: once the
        /// other node took over, its raw view reads every write fsync'd before the death, the unflushed ones
        /// whole or not at all, and the file is a valid image (its VHDX log replayed) for qemu-img.
        @Test func theOwnerDyingLosesNoFlushedWrite() throws {
            try Self.withDisk { volume, nodes in
                var random = SeededRandom(seed: SeededRandom.seed(from: "CSVFS_OWNERSHIP_SEED", test: "disk owner death"))
                let fd = try sys("open") { open(nodes[0] + "/.csvfs/raw/disk.vhdx", O_RDWR) }
                var synced: [(offset: Int, bytes: [UInt8])] = [], unsynced: [(offset: Int, bytes: [UInt8])] = []
                for block in [1, 5, 9] {
                    let bytes = (0..<65536).map { _ in UInt8.random(in: 0...255, using: &random) }
                    try writeAll(fd, bytes, at: block << 20)
                    synced.append((block << 20, bytes))
                }
                try sys("fsync") { fsync(fd) }
                for block in [5, 13, 17] {   // an overwrite of a synced block, and two new blocks
                    let bytes = (0..<65536).map { _ in UInt8.random(in: 0...255, using: &random) }
                    try writeAll(fd, bytes, at: (block << 20) + 65536)
                    unsynced.append(((block << 20) + 65536, bytes))
                }
                try volume.killCoordinator()
                close(fd)
                let survivor = try readFile(nodes[1] + "/.csvfs/raw/disk.vhdx")
                for write in synced {
                    #expect(Array(survivor[write.offset..<write.offset + write.bytes.count]) == write.bytes, "fsync'd at \(write.offset)")
                }
                for write in unsynced {
                    let found = Array(survivor[write.offset..<write.offset + write.bytes.count])
                    #expect(found == write.bytes || found.allSatisfy { $0 == 0 }, "unflushed at \(write.offset): whole or absent")
                }
                let check = try DiskTools.run(["qemu-img", "check", "-f", "vhdx", nodes[1] + "/disk.vhdx"], mustSucceed: false)
                #expect(check.succeeded, "\(check)")
                #expect(try Self.flattened(nodes[1] + "/disk.vhdx", scratch: volume.directory) == survivor)
            }
        }

        /// While a child is open on either node, its parent cannot be opened for writing or truncated on any
        /// node (ETXTBSY), through the file or its raw view; reading it is fine; and while the parent is open
        /// for writing, the child cannot be opened.
        @Test func theParentOfAnOpenChildIsReadOnlyOnEveryNode() throws {
            try withVolume(.follower) { volume in
                let nodes = [volume.coordinatorMountpoint, volume.mountpoint]
                try DiskTools.run(["vhdtool", "create", "-f", "vhdx", nodes[0] + "/base.vhdx", "8M"])
                try DiskTools.run(["vhdtool", "create", "-f", "vhdx", "-b", nodes[0] + "/base.vhdx", nodes[0] + "/child.vhdx"])
                try writeFile(nodes[0] + "/plain.txt", Array("not an image".utf8))
                for (opener, other) in [(1, 0), (0, 1)] {
                    let child = try sys("open child") { open(nodes[opener] + "/.csvfs/raw/child.vhdx", O_RDONLY) }
                    // `csvfs status` lists the open disk, its chain, and the node reading it.
                    let result = try volume.csvfs(["status", nodes[0], "--json"])
                    let status = try JSONDecoder().decode(StatusReport.self, from: Data(result.stdout.utf8))
                    let disk = status.disks?.first { $0.path == nodes[0] + "/child.vhdx" }
                    #expect(disk?.format == "vhdx" && disk?.chainDepth == 2 && disk?.parent == nodes[0] + "/base.vhdx", "\(result)")
                    #expect(disk?.owners == [StatusReport.DiskOwner(node: opener == 0 ? 1 : 2, mode: "shared")], "\(result)")
                    for node in [opener, other] {
                        let base = nodes[node] + "/base.vhdx"
                        #expect(openErrno(base, O_RDWR, 0) == ETXTBSY, "base opened for writing on node \(node)")
                        #expect(openErrno(nodes[node] + "/.csvfs/raw/base.vhdx", O_WRONLY, 0) == ETXTBSY, "its raw view, node \(node)")
                        #expect(errnoOf { truncate(base, 16 << 20) } == ETXTBSY, "truncated on node \(node)")
                        #expect(openErrno(base, O_RDONLY, 0) == 0, "read on node \(node)")
                        #expect(openErrno(nodes[node] + "/plain.txt", O_RDWR, 0) == 0, "other files are not affected")
                    }
                    close(child)
                    #expect(eventually(5) { openErrno(nodes[other] + "/base.vhdx", O_RDWR, 0) == 0 },
                            "writable again once the child is closed (its RELEASE reaches the node after close returns)")
                }
                // The other way round: a base open for writing on one node, and its child opened on the other.
                let base = try sys("open base") { open(nodes[0] + "/base.vhdx", O_RDWR) }
                #expect(openErrno(nodes[1] + "/child.vhdx", O_RDONLY, 0) == ETXTBSY)
                #expect(openErrno(nodes[1] + "/.csvfs/raw/child.vhdx", O_RDONLY, 0) == ETXTBSY)
                close(base)
                #expect(eventually(5) { openErrno(nodes[1] + "/.csvfs/raw/child.vhdx", O_RDONLY, 0) == 0 })
            }
        }
    }
}
