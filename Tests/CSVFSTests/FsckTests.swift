import Foundation
import TestSupport
import Glibc
import Testing

/// `csvfs fsck` without --repair reads and never writes: on read-only LUNs, and beside a mount.
extension Mounted {
    @Suite struct FsckTests {
        /// A volume as a crashed mount leaves it: a log SQLite has not checkpointed and freed space not yet
        /// reclaimed, both of which opening the store for writing would write back.
        func crashedVolume(_ body: (TestVolume) throws -> Void) throws {
            try withVolume { volume in
                try writeFile(volume.path("kept"), patternBytes(count: 1 << 20, seed: 1))
                try writeFile(volume.path("deleted"), patternBytes(count: 1 << 20, seed: 2))
                try sys("unlink") { unlink(volume.path("deleted")) }
                try volume.crash()
                try body(volume)
            }
        }

        func sha256(_ path: String) throws -> String {
            let result = try runProcess("/usr/bin/sha256sum", [path])
            guard result.succeeded, let digest = result.stdout.split(separator: " ").first else {
                throw FixtureError("sha256sum \(path): \(result)")
            }
            return String(digest)
        }

        func expectCleanAndUnchanged(_ volume: TestVolume, checking lun: String, image: String) throws {
            let before = try sha256(image)
            let fsck = try volume.csvfs(["fsck", lun])
            #expect(fsck.succeeded && fsck.stdout.contains("clean"), "fsck \(lun): \(fsck)")
            #expect(try sha256(image) == before, "fsck without --repair left the LUN byte-identical")
        }

        @Test func fsckOfAReadOnlyImageFileWritesNothing() throws {
            try crashedVolume { volume in
                try sys("chmod") { chmod(volume.lun, 0o444) }
                defer { chmod(volume.lun, 0o644) }
                try expectCleanAndUnchanged(volume, checking: volume.lun, image: volume.lun)
            }
        }

        @Test func fsckOfAReadOnlyLoopDeviceWritesNothing() throws {
            try crashedVolume { volume in
                let loop = try runProcess("/usr/sbin/losetup", ["-r", "--show", "-f", volume.lun], timeout: 30)
                try #require(loop.succeeded, "losetup -r: \(loop)")
                let device = loop.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                defer { _ = try? runProcess("/usr/sbin/losetup", ["-d", device], timeout: 30) }
                let readOnly = try runProcess("/usr/sbin/blockdev", ["--getro", device], timeout: 30)
                #expect(readOnly.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "\(device) is read-only: \(readOnly)")
                try expectCleanAndUnchanged(volume, checking: device, image: volume.lun)
            }
        }

        @Test func fsckThroughAReadOnlyBindMountWritesNothing() throws {
            try crashedVolume { volume in
                let view = volume.directory.appendingPathComponent("read-only-view").path
                try FileManager.default.createDirectory(atPath: view, withIntermediateDirectories: false)
                let bind = try runProcess("/usr/bin/mount", ["--bind", "-o", "ro", volume.directory.path, view], timeout: 30)
                try #require(bind.succeeded, "mount --bind -o ro: \(bind)")
                defer { _ = try? runProcess("/usr/bin/umount", [view], timeout: 30) }
                let lun = view + "/lun.img"
                let writable = open(lun, O_RDWR)
                if writable >= 0 { close(writable) }
                #expect(writable < 0 && errno == EROFS, "the bind mount is read-only")
                try expectCleanAndUnchanged(volume, checking: lun, image: volume.lun)
            }
        }

        /// As `e2fsck -n` does: a mounted volume is checked with a warning, and a repair is refused.
        @Test func fsckOfAMountedVolumeSaysSoAndRefusesToRepair() throws {
            try withVolume { volume in
                try writeFile(volume.path("file"), patternBytes(count: 100_000, seed: 3))
                let check = try volume.fsck()
                #expect(check.succeeded && check.stdout.contains("clean"), "fsck beside the mount: \(check)")
                #expect(check.stderr.contains("is mounted"), "fsck warns that the volume is mounted: \(check)")
                let repair = try volume.csvfs(["fsck", volume.lun, "--repair"])
                #expect(!repair.succeeded && repair.stderr.contains("refusing to repair"), "fsck --repair beside the mount: \(repair)")
                #expect(try readFile(volume.path("file")) == patternBytes(count: 100_000, seed: 3), "the mount still serves")
            }
        }
    }
}
