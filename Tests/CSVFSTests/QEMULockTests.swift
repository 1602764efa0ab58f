import Foundation
import Glibc
import Testing
import TestSupport

/// QEMU's image locking between two nodes' mounts of one volume: the OFD locks QEMU takes on an image must
/// stop a second writer on the other node, as they do on one host, or two VMs corrupt one disk.
extension Mounted {
    @Suite struct QEMULockTests {
        /// `body(volume, [coordinator's mountpoint, other node's mountpoint])`.
        static func withTwoNodes(_ body: (TestVolume, [String]) throws -> Void) throws {
            try withVolume(.follower) { volume in
                try body(volume, [volume.coordinatorMountpoint, volume.mountpoint])
            }
        }

        static func createImage(_ path: String, format: String) throws {
            let created = try QEMU.img(["create", "-f", format, path, "1M"])
            try #require(created.succeeded, "\(created)")
        }

        @Test(arguments: [0, 1]) func aRawImageHasOneWriterAcrossNodes(_ holder: Int) throws {
            try Self.withTwoNodes { volume, nodes in
                try Self.createImage(nodes[holder] + "/disk.raw", format: "raw")
                let held = try QEMUImageHolder(nodes[holder] + "/disk.raw", format: "raw", directory: volume.directory)
                defer { held.finish() }
                let other = nodes[1 - holder] + "/disk.raw"

                let refused = try QEMU.io(other, format: "raw", "write -P 0xcd 0 4k")
                #expect(!refused.succeeded && refused.stderr.contains(QEMU.writeLockRefused), "a second writer on the other node: \(refused)")
                #expect(try readRange(other, offset: 0, count: 4096) == [UInt8](repeating: 0, count: 4096), "the refused writer wrote nothing")
                let reader = try QEMU.img(["info", "-f", "raw", other])
                #expect(reader.succeeded, "a raw image's reader needs no lock: \(reader)")

                #expect(held.finish() == 0, "\(held.process.stderrText)")
                // The kernel releases the holder's locks asynchronously after its close.
                var last: ProcessResult?
                #expect(try eventually {
                    last = try QEMU.io(other, format: "raw", "write -P 0xcd 0 4k")
                    return last!.succeeded
                }, "the holder closed the image, yet: \(String(describing: last))")
                #expect(try readRange(nodes[holder] + "/disk.raw", offset: 0, count: 4096) == [UInt8](repeating: 0xcd, count: 4096),
                        "the holder's node sees the other's write")
            }
        }

        @Test(arguments: [0, 1]) func aQcow2ImageHasOneWriterAndNoReaderAcrossNodes(_ holder: Int) throws {
            try Self.withTwoNodes { volume, nodes in
                try Self.createImage(nodes[holder] + "/disk.qcow2", format: "qcow2")
                let held = try QEMUImageHolder(nodes[holder] + "/disk.qcow2", format: "qcow2", directory: volume.directory)
                defer { held.finish() }
                let other = nodes[1 - holder] + "/disk.qcow2"

                let refused = try QEMU.io(other, format: "qcow2", "write -P 0xcd 0 4k")
                #expect(!refused.succeeded && refused.stderr.contains(QEMU.writeLockRefused), "a second writer on the other node: \(refused)")
                let reader = try QEMU.img(["info", other])
                #expect(!reader.succeeded && reader.stderr.contains(QEMU.sharedWriteLockRefused),
                        "a qcow2 reader needs the metadata unchanged under it: \(reader)")

                #expect(held.finish() == 0, "\(held.process.stderrText)")
                var last: ProcessResult?
                #expect(try eventually {
                    last = try QEMU.img(["info", other])
                    return last!.succeeded
                }, "the holder closed the image, yet: \(String(describing: last))")
                let written = try QEMU.io(other, format: "qcow2", "write -P 0xcd 0 4k")
                #expect(written.succeeded, "\(written)")
                let read = try QEMU.io(nodes[holder] + "/disk.qcow2", format: "qcow2", "read -P 0xcd 0 4k")
                #expect(read.succeeded && read.stdout.contains("read 4096/4096 bytes at offset 0")
                        && !read.stdout.contains("Pattern verification failed"), "the holder's node reads the other's write: \(read)")
            }
        }
    }
}
