import Foundation
import TestSupport
import Testing
@testable import VHDFormat

/// Damaged images give a clear VHDError naming the problem: never a crash, a hang, or an allocation
/// of a claimed size.
@Suite struct BadInputTests {
    /// A small image with a few allocated blocks.
    static func sample(_ format: ImageFormat, in directory: TestDirectory, name: String = "sample") throws -> String {
        let image = directory.file("\(name).\(format.rawValue)")
        try DiskCreator.create(at: image, options: .init(format: format, type: .dynamic, virtualSize: 8 << 20, blockSize: 1 << 20))
        let disk = try VirtualDisk.open(image, options: .init(writable: true))
        var model = DiskModel(size: 8 << 20)
        try model.write(disk, at: 0, count: 100_000, seed: 1)
        try model.write(disk, at: 3 << 20, count: 100_000, seed: 2)
        try model.write(disk, at: 7 << 20, count: 4096, seed: 3)
        try disk.close()
        return image
    }

    static func patch(_ path: String, at offset: UInt64, _ bytes: [UInt8]) throws {
        let file = try ImageFile(path: path, writable: true)
        try file.write(at: offset, bytes: bytes)
    }

    static func truncate(_ path: String, to size: UInt64) throws {
        try ImageFile(path: path, writable: true).truncate(to: size)
    }

    /// Opens and reads everything; returns the error, which must be a VHDError.
    static func openError(_ path: String) -> VHDError? {
        do {
            let disk = try VirtualDisk.open(path)
            _ = try disk.read(at: 0, count: Int(disk.virtualSize))
            return nil
        } catch let error as VHDError {
            return error
        } catch {
            Issue.record("not a VHDError: \(error)")
            return nil
        }
    }

    static func bigEndian32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
    static func littleEndian64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    // MARK: VHD

    @Test func vhdTruncations() throws {
        let directory = try TestDirectory()
        let image = try Self.sample(.vhd, in: directory)
        let size = try ImageFile(path: image, writable: false).size()
        for cut in [0, 100, 511, 1000, 3000, size / 2, size - 600] as [UInt64] {
            let copy = directory.file("cut-\(cut).vhd")
            try FileManager.default.copyItem(atPath: image, toPath: copy)
            try Self.truncate(copy, to: cut)
            let error = Self.openError(copy)
            #expect(error != nil, "cut at \(cut) opened")
            if let error { #expect(!error.description.isEmpty) }
        }
        let copy = directory.file("short.vhd")
        try FileManager.default.copyItem(atPath: image, toPath: copy)
        try Self.truncate(copy, to: 1000)
        guard case .truncated = Self.openError(copy) else { Issue.record("expected truncated"); return }
        // Cutting the last byte leaves a 511-byte footer, which images before Virtual PC 2004 have.
        let old = directory.file("old-footer.vhd")
        try FileManager.default.copyItem(atPath: image, toPath: old)
        try Self.truncate(old, to: size - 1)
        #expect(Self.openError(old) == nil)
    }

    @Test func vhdChecksums() throws {
        let directory = try TestDirectory()
        let image = try Self.sample(.vhd, in: directory)
        let size = try ImageFile(path: image, writable: false).size()
        // One damaged footer: the copy at 0 stands in, and check names the damage.
        try Self.patch(image, at: size - 512 + 100, [0x55])
        #expect(Self.openError(image) == nil)
        #expect(try DiskChecker.check(image).problems.contains { $0.contains("wrong checksum in VHD footer at end") })
        let repaired = try DiskChecker.check(image, repair: true)
        #expect(repaired.isClean, "\(repaired.problems)")
        // Both damaged: an error naming the checksum.
        try Self.patch(image, at: size - 512 + 100, [0x55])
        try Self.patch(image, at: 100, [0x55])
        #expect(Self.openError(image) == .badChecksum(path: image, what: "VHD footer at end"))
        let headerCase = try Self.sample(.vhd, in: directory, name: "header")
        try Self.patch(headerCase, at: 512 + 800, [0x01])
        #expect(Self.openError(headerCase) == .badChecksum(path: headerCase, what: "VHD dynamic header"))
    }

    /// Rewrites the dynamic header and BAT through the format's own encoder so only the intended field is wrong.
    static func editVHD(_ path: String, _ edit: (inout VHDDynamicHeader, inout [UInt32], inout VHDFooter) -> Void) throws {
        let file = try ImageFile(path: path, writable: true)
        let layer = try VHDLayer(file: file, strict: false)
        guard var header = layer.dynamicHeader else { throw ToolFailed(description: "not sparse") }
        var bat = layer.bat
        var footer = layer.footer
        edit(&header, &bat, &footer)
        try file.write(at: 512, bytes: header.encoded())
        try file.write(at: 0, bytes: footer.encoded())
        try file.write(at: try file.size() - 512, bytes: footer.encoded())
        try file.write(at: header.tableOffset, bytes: bat.prefix(Int(min(UInt32(bat.count), header.maxTableEntries))).flatMap(bigEndian32))
    }

    @Test func vhdBATPastTheEndOrOverlapping() throws {
        let directory = try TestDirectory()
        let pastEnd = try Self.sample(.vhd, in: directory, name: "past")
        try Self.editVHD(pastEnd) { _, bat, _ in bat[7] = 0x00F0_0000 }
        let error = Self.openError(pastEnd)
        #expect(error?.description.contains("VHD BAT entry 7") == true && error?.description.contains("past the end") == true, "\(String(describing: error))")
        let report = try DiskChecker.check(pastEnd)
        #expect(report.problems.contains { $0.contains("past the end") })
        let repaired = try DiskChecker.check(pastEnd, repair: true)
        #expect(repaired.isClean && repaired.repairs.contains("unallocated 1 bad BAT entries"))
        #expect(Self.openError(pastEnd) == nil)

        let overlap = try Self.sample(.vhd, in: directory, name: "overlap")
        try Self.editVHD(overlap) { _, bat, _ in bat[3] = bat[0] + 8 }
        #expect(Self.openError(overlap)?.description.contains("overlap") == true)
    }

    @Test func vhdAbsurdSizes() throws {
        let directory = try TestDirectory()
        let entries = try Self.sample(.vhd, in: directory, name: "entries")
        try Self.editVHD(entries) { header, _, _ in header.maxTableEntries = 0xFFFF_FFF0 }
        guard case .truncated = Self.openError(entries) else { Issue.record("expected truncated BAT"); return }
        let huge = try Self.sample(.vhd, in: directory, name: "huge")
        try Self.editVHD(huge) { _, _, footer in footer.currentSize = 1 << 62 }
        #expect(Self.openError(huge)?.description.contains("too few for a disk") == true)
        let block = try Self.sample(.vhd, in: directory, name: "block")
        try Self.editVHD(block) { header, _, _ in header.blockSize = 3000 }
        #expect(Self.openError(block)?.description.contains("block size 3000") == true)
    }

    // MARK: VHDX

    @Test func vhdxTruncationsAndChecksums() throws {
        let directory = try TestDirectory()
        let image = try Self.sample(.vhdx, in: directory)
        let size = try ImageFile(path: image, writable: false).size()
        for cut in [0, 8, 70_000, 200_000, 1 << 20, 3 << 20, (3 << 20) + 100, size - 4096] as [UInt64] {
            let copy = directory.file("cut-\(cut).vhdx")
            try FileManager.default.copyItem(atPath: image, toPath: copy)
            try Self.truncate(copy, to: cut)
            #expect(Self.openError(copy) != nil, "cut at \(cut) opened")
        }
        // One bad header: the other serves, check reports and repair rewrites it.
        let oneHeader = directory.file("one-header.vhdx")
        try FileManager.default.copyItem(atPath: image, toPath: oneHeader)
        try Self.patch(oneHeader, at: 0x10000 + 200, [0xFF])
        try Self.patch(oneHeader, at: 0x20000 + 200, [0xFF])
        #expect(Self.openError(oneHeader) == .badChecksum(path: oneHeader, what: "VHDX header 1"))
        let oneRegion = directory.file("one-region.vhdx")
        try FileManager.default.copyItem(atPath: image, toPath: oneRegion)
        try Self.patch(oneRegion, at: 0x30000 + 5000, [0xFF])
        #expect(Self.openError(oneRegion) == nil)
        #expect(try DiskChecker.check(oneRegion).problems.contains("wrong checksum in VHDX region table 1".replacingOccurrences(of: "wrong", with: "\(oneRegion): wrong")))
        #expect(try DiskChecker.check(oneRegion, repair: true).isClean)
        try Self.patch(oneRegion, at: 0x30000 + 5000, [0xFF])
        try Self.patch(oneRegion, at: 0x40000 + 5000, [0xFF])
        #expect(Self.openError(oneRegion) == .badChecksum(path: oneRegion, what: "VHDX region table 1"))
    }

    /// The BAT of the sample sits at 3 MiB (Hyper-V layout).
    static func setVHDXBATEntry(_ path: String, index: Int, _ value: UInt64) throws {
        try patch(path, at: VHDXCreator.batOffset + UInt64(index) * 8, littleEndian64(value))
    }

    static func vhdxBATEntry(_ path: String, index: Int) throws -> UInt64 {
        try VHDXLayer(file: ImageFile(path: path, writable: false), strict: false).bat[index]
    }

    @Test func vhdxBATPastTheEndOrOverlappingOrInvalid() throws {
        let directory = try TestDirectory()
        let pastEnd = try Self.sample(.vhdx, in: directory, name: "past")
        try Self.setVHDXBATEntry(pastEnd, index: 7, (1 << 40) | 6)
        #expect(Self.openError(pastEnd)?.description.contains("past the end") == true)
        let repaired = try DiskChecker.check(pastEnd, repair: true)
        #expect(repaired.isClean, "\(repaired.problems)")
        #expect(Self.openError(pastEnd) == nil)
        let check = try ProcessRunner.run("qemu-img", ["check", "-f", "vhdx", pastEnd])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")

        let overlap = try Self.sample(.vhdx, in: directory, name: "overlap")
        try Self.setVHDXBATEntry(overlap, index: 3, try Self.vhdxBATEntry(overlap, index: 0))
        #expect(Self.openError(overlap)?.description.contains("overlap") == true)
        let intoMetadata = try Self.sample(.vhdx, in: directory, name: "meta")
        try Self.setVHDXBATEntry(intoMetadata, index: 1, (2 << 20) | 6)
        #expect(Self.openError(intoMetadata)?.description.contains("overlaps the VHDX metadata region") == true)
        let badState = try Self.sample(.vhdx, in: directory, name: "state")
        try Self.setVHDXBATEntry(badState, index: 2, 5)
        #expect(Self.openError(badState)?.description.contains("invalid payload state 5") == true)
    }

    @Test func vhdxAbsurdSizes() throws {
        let directory = try TestDirectory()
        let image = try Self.sample(.vhdx, in: directory)
        // Virtual size item: find it through the metadata table and claim 4 EiB.
        let region = try ImageFile(path: image, writable: false).read(at: VHDXCreator.metadataOffset, count: 65536, what: "test")
        let count = Int(try region.littleEndian(UInt16.self, at: 10))
        let sizeEntry = try #require((0..<count).first { GUID(bytes: Array(region[32 + $0 * 32..<48 + $0 * 32])) == VHDXMetadata.virtualDiskSizeGuid })
        let itemOffset = try region.littleEndian(UInt32.self, at: 32 + sizeEntry * 32 + 16)
        try Self.patch(image, at: VHDXCreator.metadataOffset + UInt64(itemOffset), Self.littleEndian64(1 << 62))
        #expect(Self.openError(image)?.description.contains("virtual size") == true)

        // A region table claiming a 4 GiB metadata region: refused before anything that size is read.
        let big = try Self.sample(.vhdx, in: directory, name: "big")
        let file = try ImageFile(path: big, writable: true)
        var table = try VHDXRegionTable(parsing: try file.read(at: 0x30000, count: 65536, what: "t"), path: big, which: "t")
        table.entries = table.entries.map { var e = $0; if e.guid == VHDXRegionTable.metadataGuid { e.length = 0xFFF0_0000 }; return e }
        try file.write(at: 0x30000, bytes: table.encoded())
        try file.write(at: 0x40000, bytes: table.encoded())
        guard case .truncated = Self.openError(big) else { Issue.record("expected truncated region"); return }
    }

    @Test func vhdxLogWritingOutsideTheFileIsRefused() throws {
        let directory = try TestDirectory()
        let image = try Self.sample(.vhdx, in: directory)
        let file = try ImageFile(path: image, writable: true)
        var problems: [String] = []
        let (header, slot) = try VHDXHeader.readCurrent(from: file, problems: &problems)
        var dirty = header
        dirty.logGuid = .random()
        dirty.sequenceNumber += 1
        try file.write(at: VHDXHeader.offsets[1 - slot], bytes: dirty.encoded())
        // An entry that would overwrite the headers.
        let entry = VHDXLogEntry(sequenceNumber: 1, tail: 0, logGuid: dirty.logGuid, flushedFileOffset: 4 << 20,
                                 lastFileOffset: 4 << 20, descriptors: [.data(fileOffset: 0x10000, page: [UInt8](repeating: 0, count: 4096))])
        try file.write(at: header.logOffset, bytes: entry.encoded())
        let before = try FileCompare.contents(image)
        #expect(Self.openError(image)?.description.contains("outside the file's metadata and data") == true)
        #expect(try FileCompare.contents(image) == before)
    }

    /// Random damage to the metadata of small images: every outcome is a clean open or a VHDError.
    @Test(arguments: [ImageFormat.vhd, .vhdx])
    func randomDamageNeverCrashes(_ format: ImageFormat) throws {
        let directory = try TestDirectory()
        let image = try Self.sample(format, in: directory)
        let original = try FileCompare.contents(image)
        var random = SeededRandom(seed: format == .vhd ? 1 : 2)
        let hotSpots: [Range<Int>] = format == .vhd
            ? [0..<2048, 1536..<1600, (original.count - 512)..<original.count]
            : [0..<512, 0x10000..<0x10100, 0x30000..<0x30100, (2 << 20)..<(2 << 20) + 512, (2 << 20) + 65536..<(2 << 20) + 65700, (3 << 20)..<(3 << 20) + 128]
        let copy = directory.file("damaged.\(format.rawValue)")
        for _ in 0..<150 {
            var bytes = original
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let spot = hotSpots[Int(random.next() % UInt64(hotSpots.count))]
                let index = spot.lowerBound + Int(random.next() % UInt64(spot.count))
                bytes[index] = UInt8(truncatingIfNeeded: random.next())
            }
            #expect(FileManager.default.createFile(atPath: copy, contents: Data(bytes)))
            _ = Self.openError(copy)
            _ = try? DiskChecker.check(copy)
        }
    }
}

