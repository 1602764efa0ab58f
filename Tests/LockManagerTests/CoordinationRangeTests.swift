@testable import CSVFS
import Foundation
import Glibc
import LockManager
import Testing

/// The local coordination backend on a formatted LUN image, as docs/dlm.md gives it: it must keep to the
/// volume's coordination range, and its locks and the mount claim must not get in each other's way.
/// Here, in the lock manager's test process, because elections run on the cooperative pool, which the
/// synchronous mount suites starve.
@Suite(.serialized)
final class CoordinationRangeTests {
    let directory: URL
    var lun: String { directory.appendingPathComponent("lun.img").path }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-coordination-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try VolumeFormatter.format(path: lun, size: 64 << 20, force: false)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func bytes(_ range: Range<Int64>) throws -> [UInt8] {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: lun))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(range.lowerBound))
        return Array(try handle.read(upToCount: range.count) ?? Data())
    }

    /// A node of the local backend on the range the volume's superblock names, as docs/dlm.md says.
    func coordination(node: UInt32) throws -> LocalCoordination {
        let device = try LUNDevice.open(lun)
        defer { device.close() }
        let (superblock, _) = try device.superblock()
        let region = LocalCoordination.Region(offset: superblock.coordinationOffset, length: superblock.coordinationLength)
        return try LocalCoordination(path: lun, region: region, node: node)
    }

    /// Polls `condition` every 10 ms for at most `seconds`.
    func eventually(_ seconds: Double = 10, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        return false
    }

    @Test func anElectionLeavesTheSuperblocksAndTheVolumeIntact() async throws {
        let before = try bytes(0..<(1 << 20))
        let one = try coordination(node: 1), two = try coordination(node: 2)
        try await one.start(address: "127.0.0.1:1")
        try await two.start(address: "127.0.0.1:2")
        #expect(try await eventually { (one.ownLeadership() ?? two.ownLeadership()) != nil }, "someone is elected")
        let leader = try #require(one.ownLeadership() ?? two.ownLeadership())
        let follower = leader.node == 1 ? two : one
        #expect(try await follower.leader() == leader, "the record the leader wrote is read back")
        #expect(try await follower.members() == [1, 2])
        await one.stop()
        await two.stop()

        let after = try bytes(0..<(1 << 20))
        let superblockSize = Int64(Superblock.size)
        for copy in [Superblock.primaryOffset, Superblock.backupOffset] {
            let range = Int(copy)..<Int(copy + superblockSize)
            let unchanged = after[range] == before[range]
            #expect(unchanged, "superblock at \(copy) unchanged")
            #expect(throws: Never.self) { try Superblock.decode(Array(after[range])) }
        }
        let device = try LUNDevice.open(lun)
        let (_, copy) = try device.superblock()
        device.close()
        #expect(copy == .primary)
        let report = try VolumeChecker.check(path: lun, repair: false)
        #expect(report.isClean, "fsck: \(report.findings)")
        let volume = try Volume.open(path: lun)
        #expect(!volume.usedBackupSuperblock)
        volume.close()
    }

    @Test func theRangeIsReservedAndApartFromTheMountClaim() throws {
        let device = try LUNDevice.open(lun)
        let (superblock, _) = try device.superblock()
        device.close()
        let range = superblock.coordinationOffset..<(superblock.coordinationOffset + superblock.coordinationLength)
        #expect(range.count >= Int(LocalCoordination.regionLength), "the backend fits")
        #expect(range.lowerBound >= Superblock.primaryOffset + Int64(Superblock.size))
        #expect(range.upperBound <= Superblock.backupOffset)
        #expect(!range.contains(LUNDevice.inUseLockOffset))
        #expect(try bytes(range).allSatisfy { $0 == 0 }, "format zeroes the range")

        // A superblock whose range would cover the mount claim, or the superblock itself, is refused.
        for (offset, length) in [(LUNDevice.inUseLockOffset, Int64(4096)), (Int64(0), Int64(8192)), (Superblock.backupOffset - 4096, Int64(8192))] {
            var bad = superblock
            bad.coordinationOffset = offset
            bad.coordinationLength = length
            #expect(throws: VolumeError.corruptSuperblock("impossible geometry")) { try Superblock.decode(bad.encoded()) }
        }
    }

    @Test func theMountClaimAndTheBackendsLocksDoNotBlockEachOther() async throws {
        let volume = try Volume.open(path: lun)
        var volumeOpen = true
        defer { if volumeOpen { volume.close() } }
        let one = try coordination(node: 1), two = try coordination(node: 2)
        try await one.start(address: "127.0.0.1:1")
        try await two.start(address: "127.0.0.1:2")
        #expect(try await eventually { (one.ownLeadership() ?? two.ownLeadership()) != nil }, "elected while the volume is mounted")
        #expect(try await one.members() == [1, 2])
        // The claim still refuses a second opener, and it alone says "in use".
        #expect(throws: VolumeError.alreadyInUse) { try Volume.open(path: lun) }
        #expect(VolumeUsage.isInUse(path: lun))
        volume.close()
        volumeOpen = false
        #expect(!VolumeUsage.isInUse(path: lun), "the backend's locks are not a mount")
        #expect(try await two.members() == [1, 2], "closing the volume leaves the membership alone")
        let again = try Volume.open(path: lun)
        again.close()
        await one.stop()
        await two.stop()
    }
}
