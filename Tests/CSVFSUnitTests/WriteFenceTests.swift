@testable import CSVFS
import Foundation
import Glibc
import Primitives
import Testing

/// The write fence and the epoch stamp in-process: a write the fence or the stamp refuses fails with EIO and
/// leaves the LUN as it was.
@Suite(.serialized)
final class WriteFenceTests {
    let directory: URL
    var lun: String { directory.appendingPathComponent("lun.img").path }
    let root = Caller(uid: 0, gid: 0)

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-fence-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try VolumeFormatter.format(path: lun, size: 64 << 20, force: false)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func lunBytes() throws -> Data { try Data(contentsOf: URL(fileURLWithPath: lun)) }

    @Test func aLeaseAdmitsUntilItsDeadlineAndAClosedFenceStaysClosed() {
        let fence = WriteFence()
        #expect(fence.admits(), "unbounded until a backend with a lease bounds it")
        fence.lease(until: WriteFence.now() + 10_000_000_000)
        #expect(fence.admits())
        fence.lease(until: WriteFence.now() - 1)
        #expect(fence.admits(), "a deadline never moves back")
        let lines = Primitives.Locked<[String]>([])
        fence.reportClosing { line in lines.withLock { $0.append(line) } }
        let expired = WriteFence()
        expired.reportClosing { line in lines.withLock { $0.append(line) } }
        expired.lease(until: WriteFence.now() + 1_000_000)
        usleep(5_000)
        #expect(!expired.admits() && !expired.admits())
        expired.lease(until: WriteFence.now() + 10_000_000_000)
        #expect(!expired.admits(), "a renewal after the deadline does not revive the fence")
        fence.close("test")
        fence.lease(until: WriteFence.now() + 20_000_000_000)
        #expect(!fence.admits() && fence.isClosed)
        let logged = lines.withLock { $0 }
        #expect(logged.count == 2, "one line per fence: \(logged)")
        #expect(logged.contains { $0.hasPrefix("fenced: lease lapsed at ") && $0.hasSuffix("no LUN writes from now on") }, "\(logged)")
    }

    @Test func aClosedFenceRefusesDataWritesWithEIOBeforeTheyReachTheLUN() throws {
        for io in LUNIOMode.allCases {
            let volume = try Volume.open(path: lun, io: io)
            defer { volume.close() }
            let file = try volume.service.createNode(parent: 1, name: Array("f-\(io)".utf8), mode: UInt32(S_IFREG) | 0o644,
                                                     rdev: 0, symlinkTarget: nil, caller: root)
            let first = [UInt8](repeating: 0xA1, count: 64 << 10)
            try first.withUnsafeBytes { try volume.data.write(file.ino, offset: 0, data: $0) }
            try volume.service.sync()
            try volume.device.fd.dataSync()
            let before = try lunBytes()
            volume.device.fence.close("test")
            let second = [UInt8](repeating: 0xB2, count: 64 << 10)
            #expect(throws: Errno.io) { try second.withUnsafeBytes { try volume.data.write(file.ino, offset: 0, data: $0) } }
            #expect(throws: Errno.io) { try volume.device.fd.write([1, 2, 3], at: 4096) }
            #expect(try lunBytes() == before, "\(io): nothing of a refused write reached the LUN")
        }
    }

    @Test func aCoordinatorWhoseEpochWasReplacedOnTheVolumeWritesNothingMore() throws {
        let device = try LUNDevice.open(lun)
        defer { device.close() }
        let (superblock, _) = try device.superblock()
        let stamp = try VolumeEpoch.stamp(7, on: device)
        #expect(try device.superblock().0.epoch == 7)
        let service = try LocalMetadataService.open(device: device, superblock: superblock, takingOver: true, epoch: stamp)
        defer { service.close() }
        _ = try service.createNode(parent: 1, name: Array("mine".utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                   symlinkTarget: nil, caller: root)
        try service.sync()

        // The successor, through a descriptor of its own, as another host would.
        let successor = try LUNDevice.open(lun)
        _ = try VolumeEpoch.stamp(8, on: successor)
        successor.close()
        let before = try lunBytes()
        #expect(throws: Errno.io) {
            _ = try service.createNode(parent: 1, name: Array("stale".utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                       symlinkTarget: nil, caller: root)
        }
        #expect(device.fence.isClosed, "the old coordinator stepped down")
        #expect(device.fence.reason?.contains("epoch 8") == true, "\(device.fence.reason ?? "no reason")")
        #expect(try lunBytes() == before, "nothing of the stale coordinator's transaction reached the LUN")
    }
}
