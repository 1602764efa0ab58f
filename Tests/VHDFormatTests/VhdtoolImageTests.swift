import Foundation
import TestSupport
import Testing
@testable import VHDFormat

/// Images made and written by VHDFormat pass `qemu-img check` and read identical through qemu-img
/// and through libvhdi's vhdimount.
@Suite struct VhdtoolImageTests {
    struct Case: CustomStringConvertible, Sendable {
        var format: ImageFormat
        var type: DiskType
        var blockSize: UInt64?
        var description: String { "\(format.rawValue) \(type.rawValue) \(blockSize.map(String.init) ?? "default")" }
    }

    static let cases: [Case] = [
        Case(format: .vhd, type: .fixed), Case(format: .vhd, type: .dynamic),
        Case(format: .vhd, type: .dynamic, blockSize: 512 << 10),
        Case(format: .vhdx, type: .fixed), Case(format: .vhdx, type: .dynamic),
        Case(format: .vhdx, type: .dynamic, blockSize: 1 << 20),
    ]

    static let size = 48 << 20

    @Test(arguments: cases)
    func peersReadWhatWeWrite(_ testCase: Case) throws {
        let directory = try TestDirectory()
        let image = directory.file("made.\(testCase.format.rawValue)")
        let facts = try DiskCreator.create(at: image, options: .init(
            format: testCase.format, type: testCase.type, virtualSize: UInt64(Self.size), blockSize: testCase.blockSize))
        #expect(facts.type == testCase.type)
        #expect(facts.virtualSize == UInt64(Self.size))

        var model = DiskModel(size: Self.size)
        let disk = try VirtualDisk.open(image, options: .init(writable: true))
        // Aligned, unaligned, block-straddling and last-byte writes.
        let writes: [(Int, Int)] = [(0, 4096), (700, 3000), ((2 << 20) - 100, 300), (5 << 20, 3 << 20),
                                    ((17 << 20) + 1, 1), (Self.size - 4096, 4096), (Self.size - 1, 1)]
        for (index, (offset, count)) in writes.enumerated() {
            try model.write(disk, at: offset, count: count, seed: UInt8(index + 1))
        }
        #expect(FileCompare.firstDifference(try disk.read(at: 0, count: Self.size), model.bytes) == nil)
        try disk.close()

        if testCase.format == .vhdx {
            let check = try ProcessRunner.run("qemu-img", ["check", "-f", "vhdx", image])
            #expect(check.status == 0, "qemu-img check: \(check.stdout)\(check.stderr)")
        }
        #expect(try DiskChecker.check(image).isClean)
        let viaQemu = try Qemu.rawContents(image, format: testCase.format, in: directory)
        #expect(FileCompare.firstDifference(viaQemu, model.bytes) == nil)
        try VhdiMount.withMount(image, in: directory.path) { mountPoint in
            let viaLibvhdi = try FileCompare.contents(try VhdiMount.topView(mountPoint))
            #expect(FileCompare.firstDifference(viaLibvhdi, model.bytes) == nil)
        }
        let reopened = try FileCompare.flattened(image)
        #expect(FileCompare.firstDifference(reopened, model.bytes) == nil)
    }

    /// 4 KiB logical sectors (qemu cannot open these; libvhdi can): unaligned writes become read-modify-write.
    @Test func fourKiBSectorVhdxReadsIdenticalThroughLibvhdi() throws {
        let directory = try TestDirectory()
        let image = directory.file("4k.vhdx")
        let size = 16 << 20
        try DiskCreator.create(at: image, options: .init(format: .vhdx, type: .dynamic, virtualSize: UInt64(size),
                                                         blockSize: 1 << 20, logicalSectorSize: 4096))
        var model = DiskModel(size: size)
        let disk = try VirtualDisk.open(image, options: .init(writable: true))
        #expect(disk.facts.logicalSectorSize == 4096)
        try model.write(disk, at: 100, count: 5000, seed: 1)
        try model.write(disk, at: (1 << 20) - 7, count: 20, seed: 2)
        try model.write(disk, at: size - 3, count: 3, seed: 3)
        try disk.close()
        #expect(FileCompare.firstDifference(try FileCompare.flattened(image), model.bytes) == nil)
        try VhdiMount.withMount(image, in: directory.path) { mountPoint in
            let viaLibvhdi = try FileCompare.contents(try VhdiMount.topView(mountPoint))
            #expect(FileCompare.firstDifference(viaLibvhdi, model.bytes) == nil)
        }
    }

    /// qemu-io writing into our images, then us reading them, closes the loop the other way.
    @Test(arguments: [ImageFormat.vhd, .vhdx])
    func weReadWhatQemuWritesIntoOurImages(_ format: ImageFormat) throws {
        let directory = try TestDirectory()
        let image = directory.file("made.\(format.rawValue)")
        try DiskCreator.create(at: image, options: .init(format: format, type: .dynamic, virtualSize: 32 << 20))
        try ProcessRunner.check("qemu-io", ["-f", Qemu.formatName(format), "-c", "write -P 0x5a 3M 1M",
                                            "-c", "write -P 0x6b 31M 4k", image])
        let expected = try Qemu.rawContents(image, format: format, in: directory)
        #expect(FileCompare.firstDifference(try FileCompare.flattened(image), expected) == nil)
        #expect(try DiskChecker.check(image).isClean)
    }

    @Test func vhdSizesFollowTheCreatorRule() throws {
        #expect(VHDGeometry.forSize(64 << 20) == CHSGeometry(cylinders: 963, heads: 8, sectorsPerTrack: 17))
        #expect(VHDGeometry.forSize(67_125_248).byteCount == 67_125_248)
        #expect(VHDGeometry.forSize(200 << 30) == VHDGeometry.maximum)
        let footer = VHDFooter(dataOffset: .max, timestamp: 0, creatorApplication: Array("vpc ".utf8), creatorVersion: 0,
                               creatorHostOS: Array("Wi2k".utf8), size: 64 << 20,
                               geometry: VHDGeometry.forSize(64 << 20), diskType: .fixed, uniqueID: .zero)
        // Virtual PC sizes by geometry; the same footer from Hyper-V sizes by the current size.
        #expect(footer.virtualSize == VHDGeometry.forSize(64 << 20).byteCount)
        var hyperV = footer
        hyperV.creatorApplication = Array("win ".utf8)
        #expect(hyperV.virtualSize == 64 << 20)
    }

    @Test func checksumsAndIdentifiers() throws {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        let guid = try #require(GUID(mixedEndianString: "{2DC27766-F623-4200-9D64-115E9BFD4A08}"))
        #expect(guid.bytes.prefix(4) == [0x66, 0x77, 0xC2, 0x2D])
        #expect(guid.mixedEndianString == "2dc27766-f623-4200-9d64-115e9bfd4a08")
    }
}
