import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// The CLI: background mount, unmount both ways, info, and clear failures for bad LUNs and mountpoints.
extension Mounted {
    @Suite struct MountErrorTests {
        /// A failed mount: non-zero exit, a message on stderr, and nothing mounted.
        static func expectMountFails(_ volume: TestVolume, lun: String, mountpoint: String? = nil,
                                     _ why: String) throws {
            let target = mountpoint ?? volume.mountpoint
            let result = try volume.csvfs(["mount", lun, target], timeout: 90)
            #expect(result.status != 0, "\(why): mount should fail: \(result)")
            #expect(!result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(why): a message on stderr")
            #expect(!MountTable.isMounted(target), "\(why): nothing mounted")
        }

        static func overwrite(_ path: String, at offset: Int, with bytes: [UInt8]) throws {
            let fd = try sys("open \(path)") { open(path, O_WRONLY) }
            defer { close(fd) }
            try writeAll(fd, bytes, at: offset)
            try sys("fsync") { fsync(fd) }
        }

        /// The byte offset of the metadata region, as `csvfs info` reports it ("metadata: 32.0 MiB at 1048576 ...").
        static func metadataOffset(_ volume: TestVolume) throws -> Int {
            let info = try volume.csvfs(["info", volume.lun])
            let line = info.stdout.split(separator: "\n").first { $0.hasPrefix("metadata:") } ?? ""
            let words = line.split(separator: " ")
            guard let at = words.firstIndex(of: "at"), at + 1 < words.count, let offset = Int(words[at + 1]) else {
                throw FixtureError("cannot find the metadata offset in csvfs info: \(info)")
            }
            return offset
        }

        /// Whether the background server of `volume` is gone within 30 s.
        static func waitUntilNoServer(for volume: TestVolume) -> Bool {
            let deadline = Date().addingTimeInterval(30)
            while !processIDs(withArgument: volume.lun).isEmpty {
                if Date() > deadline { return false }
                usleep(20_000)
            }
            return true
        }

        @Test func backgroundMountIsReadyWhenItReturns() throws {
            try withVolume(mounted: false) { volume in
                let result = try volume.csvfs(["mount", volume.lun, volume.mountpoint], timeout: 90)
                #expect(result.succeeded, "\(result)")
                #expect(MountTable.entry(at: volume.mountpoint)?.fileSystemType == "fuse.csvfs")
                try writeFile(volume.path("hello"), Array("hello".utf8))
                #expect(try readFile(volume.path("hello")) == Array("hello".utf8))
                #expect(processIDs(withArgument: volume.lun).count == 1, "one server keeps running in the background")

                let unmount = try volume.csvfs(["unmount", volume.mountpoint])
                #expect(unmount.succeeded, "\(unmount)")
                #expect(!volume.isMounted)
                #expect(Self.waitUntilNoServer(for: volume), "the server exits after unmount")

                // fusermount3 -u works too, and the server exits after it.
                #expect(try volume.csvfs(["mount", volume.lun, volume.mountpoint], timeout: 90).succeeded)
                #expect(try readFile(volume.path("hello")) == Array("hello".utf8))
                let fusermount = try runProcess("/usr/bin/fusermount3", ["-u", volume.mountpoint], timeout: 30)
                #expect(fusermount.succeeded, "\(fusermount)")
                #expect(Self.waitUntilNoServer(for: volume), "the server exits after fusermount3 -u")
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
            }
        }

        @Test func infoDescribesTheVolume() throws {
            try withVolume(size: "256M", mounted: false) { volume in
                let info = try volume.csvfs(["info", volume.lun])
                #expect(info.succeeded, "\(info)")
                #expect(info.stdout.contains(String(256 << 20)), "size in bytes: \(info.stdout)")
                let uuid = info.stdout.split(whereSeparator: { " \n\t".contains($0) })
                    .first { UUID(uuidString: String($0)) != nil }
                #expect(uuid != nil, "a UUID: \(info.stdout)")
                // Another format gets another UUID.
                let other = TestVolumeLUN(directory: volume.directory)
                #expect(try volume.csvfs(["format", other.path, "--size", "64M"]).succeeded)
                let otherInfo = try volume.csvfs(["info", other.path])
                if let uuid { #expect(!otherInfo.stdout.contains(String(uuid))) }
            }
        }

        @Test func notACSVFSLUNIsRefused() throws {
            try withVolume(size: "64M", mounted: false) { volume in
                let junk = volume.directory.appendingPathComponent("junk.img").path
                _ = FileManager.default.createFile(atPath: junk, contents: Data(patternBytes(count: 8 << 20, seed: 70)))
                try Self.expectMountFails(volume, lun: junk, "random bytes")
                let zeros = volume.directory.appendingPathComponent("zeros.img").path
                _ = FileManager.default.createFile(atPath: zeros, contents: nil)
                #expect(truncate(zeros, 64 << 20) == 0)
                try Self.expectMountFails(volume, lun: zeros, "a zero-filled image")
                let fsck = try volume.csvfs(["fsck", junk])
                #expect(fsck.status != 0 && !fsck.stderr.isEmpty, "fsck of junk: \(fsck)")
                try Self.expectMountFails(volume, lun: volume.directory.appendingPathComponent("absent.img").path, "a missing LUN")
            }
        }

        @Test func missingMountpointIsRefused() throws {
            try withVolume(mounted: false) { volume in
                let missing = volume.directory.appendingPathComponent("no-such-dir").path
                try Self.expectMountFails(volume, lun: volume.lun, mountpoint: missing, "missing mountpoint")
                let result = try volume.csvfs(["mount", volume.lun, missing, "--foreground"], timeout: 30)
                #expect(result.status != 0 && result.stderr.contains("no-such-dir"), "\(result)")
            }
        }

        @Test func corruptSuperblocksAreDetected() throws {
            try withVolume(mounted: true, fsckAtTeardown: false) { volume in
                try writeFile(volume.path("kept"), Array("kept".utf8))
                try volume.unmount()
                let metadataOffset = try Self.metadataOffset(volume)

                // The primary superblock alone: the backup rescues the volume, with all of its data.
                try Self.overwrite(volume.lun, at: 0, with: patternBytes(count: 4096, seed: 71))
                let rescued = try volume.csvfs(["mount", volume.lun, volume.mountpoint], timeout: 90)
                try #require(rescued.succeeded, "the backup superblock rescues the volume: \(rescued)")
                #expect(try readFile(volume.path("kept")) == Array("kept".utf8))
                #expect(try volume.csvfs(["unmount", volume.mountpoint]).succeeded)

                // Every superblock copy (everything before the metadata region) destroyed: a clear refusal.
                try Self.overwrite(volume.lun, at: 0, with: patternBytes(count: metadataOffset, seed: 72))
                try Self.expectMountFails(volume, lun: volume.lun, "both superblocks corrupt")
                let fsck = try volume.fsck()
                #expect(fsck.status != 0 && !(fsck.stderr + fsck.stdout).isEmpty, "fsck: \(fsck)")
            }
        }

        @Test func corruptDatabaseIsDetected() throws {
            try withVolume(mounted: true, fsckAtTeardown: false) { volume in
                for index in 0..<50 { try writeFile(volume.path("f\(index)"), [UInt8(index)]) }
                try volume.unmount()
                let metadataOffset = try Self.metadataOffset(volume)
                try Self.overwrite(volume.lun, at: metadataOffset, with: patternBytes(count: 64 << 10, seed: 73))
                try Self.expectMountFails(volume, lun: volume.lun, "corrupt metadata database")
                let fsck = try volume.fsck()
                #expect(fsck.status != 0, "fsck of a corrupt database: \(fsck)")
            }
        }
    }
}

/// Another LUN path in a test's temp dir.
struct TestVolumeLUN {
    let path: String
    init(directory: URL) { path = directory.appendingPathComponent("other-\(UUID().uuidString.prefix(8)).img").path }
}
