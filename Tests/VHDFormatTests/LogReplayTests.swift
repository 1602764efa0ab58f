import Foundation
import TestSupport
import Testing
@testable import VHDFormat

/// A VHDX left with a non-empty log (a write interrupted after its log entry was durable) reads, through
/// an in-memory replay that leaves the file untouched, the same bytes as `qemu-img check -r all` + convert.
@Suite struct LogReplayTests {
    static let size = 32 << 20

    /// Makes an image whose last session stopped at `crashPoint`; returns the disk as it was before that
    /// session and as the session wrote it.
    static func interruptedImage(in directory: TestDirectory, at crashPoint: VHDXLogWriter.CrashPoint = .afterLogEntry)
        throws -> (path: String, model: DiskModel, before: DiskModel) {
        let image = directory.file("dirty.vhdx")
        try DiskCreator.create(at: image, options: .init(format: .vhdx, type: .dynamic, virtualSize: UInt64(size), blockSize: 1 << 20))
        var model = DiskModel(size: size)
        let first = try VirtualDisk.open(image, options: .init(writable: true))
        try model.write(first, at: 1 << 20, count: 300_000, seed: 1)
        try first.close()
        let before = model

        try {
            let second = try VirtualDisk.open(image, options: .init(writable: true))
            let layer = try #require(second.layers[0] as? VHDXLayer)
            layer.crashPoint = crashPoint
            try model.write(second, at: 5 << 20, count: 200_000, seed: 2)
            try model.write(second, at: (20 << 20) + 4096, count: 4096, seed: 3)
            #expect(throws: VHDXLogWriter.SimulatedCrash.self) { try second.flush() }
            // Dropped without a clean close, as a crashed writer would leave it.
        }()
        return (image, model, before)
    }

    @Test func interruptedWriteReplaysLikeQemuCheckRepair() throws {
        let directory = try TestDirectory()
        let (image, model, _) = try Self.interruptedImage(in: directory)
        var problems: [String] = []
        let file = try ImageFile(path: image, writable: false)
        #expect(!(try VHDXHeader.readCurrent(from: file, problems: &problems).header.logGuid.isZero))
        let before = try FileCompare.contents(image)

        // Our read-only view replays in memory and changes nothing on disk.
        let disk = try VirtualDisk.open(image)
        #expect(disk.facts.logReplayed)
        let ours = try disk.read(at: 0, count: Self.size)
        #expect(FileCompare.firstDifference(ours, model.bytes) == nil)
        #expect(try FileCompare.contents(image) == before)

        // libvhdi does not replay, so it shows the stale BAT: the interrupted writes are missing.
        try VhdiMount.withMount(image, in: directory.path) { mountPoint in
            let stale = try FileCompare.contents(try VhdiMount.topView(mountPoint))
            #expect(stale[5 << 20] != model.bytes[5 << 20] || stale[(5 << 20) + 1] != model.bytes[(5 << 20) + 1])
        }

        // qemu replays with check -r all; its result must equal our view.
        let copy = directory.file("qemu-repaired.vhdx")
        try FileManager.default.copyItem(atPath: image, toPath: copy)
        let repair = try ProcessRunner.run("qemu-img", ["check", "-r", "all", "-f", "vhdx", copy])
        #expect(repair.status == 0, "\(repair.stdout)\(repair.stderr)")
        let viaQemu = try Qemu.rawContents(copy, format: .vhdx, in: directory)
        #expect(FileCompare.firstDifference(viaQemu, ours) == nil)
    }

    @Test func readWriteOpenReplaysIntoTheFile() throws {
        let directory = try TestDirectory()
        let (image, model, _) = try Self.interruptedImage(in: directory)
        let report = try DiskChecker.check(image)
        #expect(report.problems.contains { $0.contains("log") })
        let repaired = try DiskChecker.check(image, repair: true)
        #expect(repaired.isClean)
        #expect(repaired.repairs.contains("replayed the log"))
        var problems: [String] = []
        #expect(try VHDXHeader.readCurrent(from: ImageFile(path: image, writable: false), problems: &problems).header.logGuid.isZero)
        let check = try ProcessRunner.run("qemu-img", ["check", "-f", "vhdx", image])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(FileCompare.firstDifference(try Qemu.rawContents(image, format: .vhdx, in: directory), model.bytes) == nil)
    }

    /// A crash before the log entry leaves the old BAT: the disk reads as before the session (the new
    /// blocks are leaked, not exposed), and every peer agrees.
    @Test func crashBeforeTheLogEntryKeepsTheOldState() throws {
        let directory = try TestDirectory()
        let (image, _, old) = try Self.interruptedImage(in: directory, at: .beforeLogEntry)
        let ours = try FileCompare.flattened(image)
        #expect(FileCompare.firstDifference(ours, old.bytes) == nil)
        let copy = directory.file("qemu-repaired.vhdx")
        try FileManager.default.copyItem(atPath: image, toPath: copy)
        let repair = try ProcessRunner.run("qemu-img", ["check", "-r", "all", "-f", "vhdx", copy])
        #expect(repair.status == 0, "\(repair.stdout)\(repair.stderr)")
        #expect(FileCompare.firstDifference(try Qemu.rawContents(copy, format: .vhdx, in: directory), old.bytes) == nil)
        #expect(try DiskChecker.check(image, repair: true).isClean)
        #expect(FileCompare.firstDifference(try FileCompare.flattened(image), old.bytes) == nil)
    }

    /// A differencing VHDX commits BAT entries and sector bitmap pages in one log entry: interrupted after
    /// it, our view replays both; after repair libvhdi (which never replays) agrees.
    @Test func interruptedDifferencingWriteReplaysBitmapsAndBAT() throws {
        let directory = try TestDirectory()
        let base = directory.file("base.vhdx"), child = directory.file("child.vhdx")
        try DiskCreator.create(at: base, options: .init(format: .vhdx, type: .dynamic, virtualSize: 8 << 20, blockSize: 1 << 20))
        var model = DiskModel(size: 8 << 20)
        let parent = try VirtualDisk.open(base, options: .init(writable: true))
        try model.write(parent, at: 0, count: 3 << 20, seed: 4)
        try parent.close()
        try DiskCreator.create(at: child, options: .init(format: .vhdx, type: .differencing, parentPath: base))
        try {
            let disk = try VirtualDisk.open(child, options: .init(writable: true))
            try #require(disk.layers[0] as? VHDXLayer).crashPoint = .afterLogEntry
            try model.write(disk, at: 70_000, count: 5000, seed: 5)
            try model.write(disk, at: (2 << 20) + 512, count: 1024, seed: 6)
            #expect(throws: VHDXLogWriter.SimulatedCrash.self) { try disk.flush() }
        }()
        let before = try FileCompare.contents(child)
        #expect(FileCompare.firstDifference(try FileCompare.flattened(child), model.bytes) == nil)
        #expect(try FileCompare.contents(child) == before)
        #expect(try DiskChecker.check(child, repair: true).isClean)
        try VhdiMount.withMount(child, in: directory.path) { mountPoint in
            let viaLibvhdi = try FileCompare.contents(try VhdiMount.topView(mountPoint))
            #expect(FileCompare.firstDifference(viaLibvhdi, model.bytes) == nil)
        }
    }

    @Test func staleAndTornEntriesAreIgnored() throws {
        let guid = GUID.random()
        var log = [UInt8](repeating: 0, count: 1 << 20)
        let page = [UInt8](repeating: 0xAB, count: 4096)
        func entry(_ sequence: UInt64, tail: UInt32, guid: GUID) -> [UInt8] {
            VHDXLogEntry(sequenceNumber: sequence, tail: tail, logGuid: guid, flushedFileOffset: 8 << 20,
                         lastFileOffset: 8 << 20, descriptors: [.data(fileOffset: 3 << 20, page: page)]).encoded()
        }
        let first = entry(7, tail: 0, guid: guid)
        log.replaceSubrange(0..<first.count, with: first)
        let second = entry(8, tail: 0, guid: guid)
        log.replaceSubrange(first.count..<first.count + second.count, with: second)
        // A newer entry of another session, and a torn newer entry of this one: both ignored.
        let stale = entry(50, tail: UInt32(2 * first.count), guid: GUID.random())
        log.replaceSubrange(2 * first.count..<3 * first.count, with: stale)
        var torn = entry(9, tail: 0, guid: guid)
        torn[5000] ^= 0xFF
        log.replaceSubrange(3 * first.count..<4 * first.count, with: torn)
        let sequence = VHDXLogReplay.activeSequence(log: log, logGuid: guid)
        #expect(sequence.entries.map(\.sequenceNumber) == [7, 8])
        #expect(sequence.head?.descriptors == [.data(fileOffset: 3 << 20, page: page)])
    }
}
