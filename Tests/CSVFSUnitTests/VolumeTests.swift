@testable import CSVFS
import Foundation
import Glibc
import Testing

/// The volume, metadata engine and checker in-process, without FUSE.
/// Each test gets its own formatted LUN image; the directory goes in deinit, whatever the test did.
@Suite(.serialized)
final class VolumeTests {
    let directory: URL
    var lun: String { directory.appendingPathComponent("lun.img").path }
    let root = Caller(uid: 0, gid: 0)

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try VolumeFormatter.format(path: lun, size: 64 << 20, force: false)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// Runs `body` with the volume open, and closes it whatever happens.
    func withVolume(_ body: (Volume) throws -> Void) throws {
        let volume = try Volume.open(path: lun)
        defer { volume.close() }
        try body(volume)
    }

    func write(_ volume: Volume, _ ino: UInt64, _ bytes: [UInt8], at offset: Int64) throws {
        try bytes.withUnsafeBytes { try volume.data.write(ino, offset: offset, data: $0) }
    }

    func read(_ volume: Volume, _ ino: UInt64, count: Int, at offset: Int64) throws -> [UInt8] {
        try volume.data.read(ino, offset: offset, count: count) { Array($0) }
    }

    @Test func formatRefusesAFormattedLUNAndAnOpenOne() throws {
        #expect(throws: VolumeError.alreadyFormatted) { try VolumeFormatter.format(path: lun, size: nil, force: false) }
        let volume = try Volume.open(path: lun)
        #expect(throws: VolumeError.alreadyInUse) { try Volume.open(path: lun) }
        #expect(throws: VolumeError.alreadyInUse) { try VolumeFormatter.format(path: lun, size: nil, force: true) }
        volume.close()
        let again = try Volume.open(path: lun)
        again.close()
    }

    @Test func dataSurvivesReopenAndChecksClean() throws {
        let pattern = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var ino: UInt64 = 0
        do {
            let volume = try Volume.open(path: lun)
            let file = try volume.service.createNode(parent: 1, name: Array("f".utf8), mode: UInt32(S_IFREG) | 0o644,
                                                     rdev: 0, symlinkTarget: nil, caller: root)
            ino = file.ino
            try write(volume, ino, pattern, at: 5000)
            try volume.service.sync()
            volume.close()
        }
        try withVolume { (volume) throws in
            let attributes = try volume.service.attributes(ino)
            #expect(attributes.size == UInt64(5000 + pattern.count))
            #expect(try read(volume, ino, count: 5000, at: 0) == [UInt8](repeating: 0, count: 5000))
            #expect(try read(volume, ino, count: pattern.count, at: 5000) == pattern)
            #expect(try read(volume, ino, count: 100, at: Int64(5000 + pattern.count)) == [])
        }
        let report = try VolumeChecker.check(path: lun, repair: false)
        #expect(report.isClean, "\(report.findings)")
        #expect(report.inodes == 2)
    }

    @Test func freedSpaceIsReusedOnlyAfterSyncAndNeverShowsOldBytes() throws {
        try withVolume { (volume) throws in
            let service = volume.service
            let first = try service.createNode(parent: 1, name: Array("a".utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                               symlinkTarget: nil, caller: root)
            try write(volume, first.ino, [UInt8](repeating: 0xAB, count: 1 << 20), at: 0)
            let firstPhysical = try service.mapping(first.ino, 0..<4096).segments[0].physical
            try service.unlink(parent: 1, name: Array("a".utf8))
            let second = try service.createNode(parent: 1, name: Array("b".utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                                symlinkTarget: nil, caller: root)
            try service.fallocate(second.ino, 0..<(1 << 20), mode: .allocate(keepSize: false))
            let secondPhysical = try service.mapping(second.ino, 0..<4096).segments[0].physical
            #expect(secondPhysical != firstPhysical, "blocks freed before a sync were reused")
            try service.sync()
            let third = try service.createNode(parent: 1, name: Array("c".utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                               symlinkTarget: nil, caller: root)
            try service.fallocate(third.ino, 0..<(1 << 20), mode: .allocate(keepSize: false))
            // Reused or not, an allocated but unwritten range reads as zeros.
            #expect(try read(volume, third.ino, count: 1 << 20, at: 0) == [UInt8](repeating: 0, count: 1 << 20))
            try write(volume, third.ino, [1, 2, 3], at: 10)
            let head = try read(volume, third.ino, count: 4096, at: 0)
            #expect(head[10..<13] == [1, 2, 3])
            #expect(head.enumerated().allSatisfy { $0.offset >= 10 && $0.offset < 13 || $0.element == 0 })
        }
    }

    /// The service flushes the LUN between `beginSync` and `endSync` without the store lock; an operation short
    /// of space may sync inside the store meanwhile. The frees both saw must become free space once, not twice.
    @Test func aSyncInsideTheStoreDuringAServiceSyncFreesSpaceOnce() throws {
        do {
            let device = try LUNDevice.open(lun)
            let (superblock, _) = try device.superblock()
            let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
            let file = try store.createNode(parent: 1, name: Array("f".utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                            symlinkTarget: nil, caller: root)
            try store.fallocate(file.ino, 0..<(4 << 20), mode: .allocate(keepSize: false))
            try store.unlink(parent: 1, name: Array("f".utf8))
            let ticket = try store.beginSync()
            #expect(!ticket.freed.isEmpty)
            try store.sync()
            try store.endSync(ticket)
            store.close()
            device.close()
        }
        let report = try VolumeChecker.check(path: lun, repair: false)
        #expect(report.isClean && report.findings.isEmpty, "\(report.findings)")
    }

    /// Runs `body` while every write through `lun` fails (EBADF: a read-only descriptor of the same LUN sits
    /// under its number), then puts the writable one back.
    func withWritesFailing(_ lun: FileDescriptor, _ body: () throws -> Void) throws {
        let writable = dup(lun.rawValue), readOnly = open(self.lun, O_RDONLY)
        #expect(writable >= 0 && readOnly >= 0)
        defer {
            dup2(writable, lun.rawValue)
            close(writable)
            close(readOnly)
        }
        #expect(dup2(readOnly, lun.rawValue) == lun.rawValue)
        try body()
    }

    /// A write whose commit fails changes nothing: neither the size `stat` shows now nor the one a later
    /// commit records.
    @Test func writeWhoseCommitFailsLeavesTheSizeAlone() throws {
        let block = 4096
        var ino: UInt64 = 0
        try withVolume { (volume) throws in
            ino = try volume.service.createNode(parent: 1, name: Array("f".utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                                symlinkTarget: nil, caller: root).ino
            try write(volume, ino, [UInt8](repeating: 1, count: block), at: 0)
            // Blocks past the end allocated, so the next write needs no allocation, only its commit.
            try volume.service.fallocate(ino, 0..<(1 << 20), mode: .allocate(keepSize: true))
            let segments = try volume.service.prepareWrite(ino, Int64(block)..<Int64(2 * block))
            #expect(segments.count == 1 && segments[0].unwritten)
            try withWritesFailing(volume.device.fd) {
                #expect(throws: Errno.io) {
                    try volume.service.completeWrite(ino, filled: [Int64(block)..<Int64(2 * block)], end: Int64(2 * block))
                }
            }
            #expect(try volume.service.attributes(ino).size == UInt64(block), "size after the failed write")
            try volume.service.sync()
        }
        try withVolume { (volume) throws in
            #expect(try volume.service.attributes(ino).size == UInt64(block), "size recorded after the failed write")
            #expect(try read(volume, ino, count: 2 * block, at: 0) == [UInt8](repeating: 1, count: block))
        }
        let report = try VolumeChecker.check(path: lun, repair: false)
        #expect(report.isClean, "\(report.findings)")
    }

    @Test func fsckFindsAndRepairsDamage() throws {
        do {
            let volume = try Volume.open(path: lun)
            let file = try volume.service.createNode(parent: 1, name: Array("f".utf8), mode: UInt32(S_IFREG) | 0o644,
                                                     rdev: 0, symlinkTarget: nil, caller: root)
            try write(volume, file.ino, [UInt8](repeating: 7, count: 8192), at: 0)
            volume.close()
        }
        // Damage the database behind the filesystem's back: a wrong link count and leaked space.
        do {
            let device = try LUNDevice.open(lun)
            let (superblock, _) = try device.superblock()
            let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
            try store.repair(["UPDATE inodes SET nlink = 5 WHERE ino = 2",
                              "DELETE FROM free_space WHERE start = (SELECT MAX(start) FROM free_space)"])
            store.close()
            device.close()
        }
        let damaged = try VolumeChecker.check(path: lun, repair: false)
        #expect(!damaged.isClean)
        #expect(damaged.findings.contains { $0.problem.contains("link count 5") })
        #expect(damaged.findings.contains { $0.problem.contains("neither used nor free") })
        let repaired = try VolumeChecker.check(path: lun, repair: true)
        #expect(repaired.isClean)
        let after = try VolumeChecker.check(path: lun, repair: false)
        #expect(after.isClean && after.findings.isEmpty, "\(after.findings)")
        try withVolume { (volume) throws in
            #expect(try volume.service.attributes(2).nlink == 1)
            #expect(try read(volume, 2, count: 8192, at: 0) == [UInt8](repeating: 7, count: 8192))
        }
    }

    @Test func fsckRepairsAnInodeNumberReservationBehindTheInodes() throws {
        var highest: UInt64 = 0
        try withVolume { (volume) throws in
            for name in ["a", "b"] {
                highest = try volume.service.createNode(parent: 1, name: Array(name.utf8), mode: UInt32(S_IFREG) | 0o644,
                                                        rdev: 0, symlinkTarget: nil, caller: root).ino
            }
        }
        do {
            let device = try LUNDevice.open(lun)
            let (superblock, _) = try device.superblock()
            let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
            try store.repair(["UPDATE volume SET value = 2 WHERE key = 'inode_numbers_reserved'"])
            store.close()
            device.close()
        }
        let damaged = try VolumeChecker.check(path: lun, repair: false)
        #expect(damaged.findings.map(\.problem) == ["inode \(highest) is at or above the inode numbers reserved (2): its number could be handed out again"])
        #expect(try VolumeChecker.check(path: lun, repair: true).isClean)
        #expect(try VolumeChecker.check(path: lun, repair: false).findings.isEmpty)
        try withVolume { (volume) throws in
            try volume.service.unlink(parent: 1, name: Array("b".utf8))
            let next = try volume.service.createNode(parent: 1, name: Array("c".utf8), mode: UInt32(S_IFREG) | 0o644,
                                                     rdev: 0, symlinkTarget: nil, caller: root).ino
            #expect(next > highest)
        }
    }

    @Test func overlappingExtentsAreReportedNotRepaired() throws {
        do {
            let volume = try Volume.open(path: lun)
            for name in ["a", "b"] {
                let file = try volume.service.createNode(parent: 1, name: Array(name.utf8), mode: UInt32(S_IFREG) | 0o644,
                                                         rdev: 0, symlinkTarget: nil, caller: root)
                try write(volume, file.ino, [UInt8](repeating: 1, count: 4096), at: 0)
            }
            volume.close()
        }
        let device = try LUNDevice.open(lun)
        let (superblock, _) = try device.superblock()
        let store = try MetadataStore.open(lun: device.fd, superblock: superblock)
        try store.repair(["UPDATE extents SET physical = (SELECT physical FROM extents WHERE ino = 2) WHERE ino = 3"])
        store.close()
        device.close()
        let report = try VolumeChecker.check(path: lun, repair: true)
        #expect(!report.isClean)
        #expect(report.findings.contains { $0.problem.contains("overlaps") && !$0.repaired })
    }

    @Test func corruptDatabaseIsAClearErrorNotACrash() throws {
        let device = try LUNDevice.open(lun)
        let (superblock, _) = try device.superblock()
        // Scribble over the start of the database file (its header page).
        try device.fd.write([UInt8](repeating: 0x5A, count: 4096), at: superblock.metadataRegion.databaseOffset)
        device.close()
        #expect(throws: VolumeError.self) { try Volume.open(path: lun) }
        #expect(throws: (any Error).self) { try VolumeChecker.check(path: lun, repair: false) }
    }

    @Test func backupSuperblockRescuesAndFsckRewritesThePrimary() throws {
        let device = try LUNDevice.open(lun)
        try device.fd.write([UInt8](repeating: 0xFF, count: 4096), at: 0)
        device.close()
        let volume = try Volume.open(path: lun)
        #expect(volume.usedBackupSuperblock)
        volume.close()
        let report = try VolumeChecker.check(path: lun, repair: true)
        #expect(report.findings.contains { $0.problem.contains("primary superblock") && $0.repaired })
        let after = try VolumeChecker.check(path: lun, repair: false)
        #expect(after.findings.isEmpty, "\(after.findings)")
    }
}
