import Foundation
import Testing
@testable import VHDFormat

/// Images made and written by qemu-img/qemu-io read byte-identical to `qemu-img convert -O raw`.
@Suite struct QemuImageTests {
    struct Case: CustomStringConvertible, Sendable {
        var format: ImageFormat
        var options: String
        var description: String { "\(format.rawValue) \(options)" }
    }

    static let cases: [Case] = [
        Case(format: .vhd, options: "subformat=fixed"),
        Case(format: .vhd, options: "subformat=dynamic"),
        Case(format: .vhd, options: "subformat=dynamic,force_size=on"),
        Case(format: .vhdx, options: "subformat=fixed"),
        Case(format: .vhdx, options: "subformat=dynamic,block_size=1M"),
        Case(format: .vhdx, options: "subformat=dynamic,block_size=8M"),
        Case(format: .vhdx, options: "subformat=dynamic,block_size=32M,log_size=1M"),
        Case(format: .vhdx, options: "subformat=dynamic,block_size=2M,block_state_zero=off"),
    ]

    /// Scattered writes: block starts, block ends, straddling block boundaries, single sectors, the last sector.
    static let writes: [(offset: String, length: String)] = [
        ("0", "64k"), ("1048064", "1024"), ("3M", "1M"), ("9437696", "3584"),
        ("20M", "512"), ("33553920", "8k"), ("40M", "3M"), ("67108352", "512"),
    ]

    @Test(arguments: cases)
    func readsLikeQemu(_ testCase: Case) throws {
        let directory = try TestDirectory()
        let image = directory.file("disk.\(testCase.format.rawValue)")
        let format = Qemu.formatName(testCase.format)
        try ProcessRunner.check("qemu-img", ["create", "-q", "-f", format, "-o", testCase.options, image, "64M"])
        let size = try VirtualDisk.open(image).virtualSize
        var commands: [String] = []
        for (index, write) in Self.writes.enumerated() {
            commands += ["-c", "write -P \(0x11 + index * 17) \(write.offset) \(write.length)"]
        }
        // The last write lands on the image's last sector, whatever qemu's rounding made the size.
        commands[commands.count - 1] = "write -P 0xee \(size - 512) 512"
        try ProcessRunner.check("qemu-io", ["-f", format] + commands + [image])

        let expected = try Qemu.rawContents(image, format: testCase.format, in: directory)
        let disk = try VirtualDisk.open(image)
        #expect(disk.facts.format == testCase.format)
        #expect(disk.virtualSize == UInt64(expected.count))
        let actual = try disk.read(at: 0, count: Int(disk.virtualSize))
        #expect(FileCompare.firstDifference(actual, expected) == nil)

        // The converter's sparse raw output is the same bytes.
        let raw = directory.file("out.raw")
        try DiskConverter.convert(from: image, to: raw, options: .init(outputFormat: .raw))
        #expect(FileCompare.firstDifference(try FileCompare.contents(raw), expected) == nil)

        // Allocation map: every range qemu wrote is inside an allocated range.
        let allocated = try disk.allocationMap().filter(\.allocated)
        #expect(!allocated.isEmpty)
        #expect(allocated.contains { $0.offset <= 3 << 20 && $0.offset + $0.length >= 4 << 20 })
    }

    /// Our writes into qemu's layouts (VHDX BAT before metadata, blocks in ZERO state; VHD without alignment)
    /// pass qemu-img check and read back the same through qemu.
    @Test(arguments: [Case(format: .vhd, options: "subformat=dynamic"), Case(format: .vhdx, options: "subformat=fixed"),
                      Case(format: .vhdx, options: "subformat=dynamic,block_size=4M")])
    func qemuReadsWhatWeWriteIntoItsImages(_ testCase: Case) throws {
        let directory = try TestDirectory()
        let image = directory.file("disk.\(testCase.format.rawValue)")
        let format = Qemu.formatName(testCase.format)
        try ProcessRunner.check("qemu-img", ["create", "-q", "-f", format, "-o", testCase.options, image, "32M"])
        try ProcessRunner.check("qemu-io", ["-f", format, "-c", "write -P 0x42 1M 64k", image])
        var model = DiskModel(size: 0)
        model.bytes = try Qemu.rawContents(image, format: testCase.format, in: directory)
        let disk = try VirtualDisk.open(image, options: .init(writable: true))
        try model.write(disk, at: (1 << 20) + 1000, count: 10_000, seed: 5)
        try model.write(disk, at: 9 << 20, count: 5 << 20, seed: 6)
        try model.write(disk, at: model.bytes.count - 512, count: 512, seed: 7)
        try disk.close()
        if testCase.format == .vhdx {
            let check = try ProcessRunner.run("qemu-img", ["check", "-f", "vhdx", image])
            #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        }
        #expect(FileCompare.firstDifference(try Qemu.rawContents(image, format: testCase.format, in: directory), model.bytes) == nil)
    }

    @Test func detectsFormatFromContentNotName() throws {
        let directory = try TestDirectory()
        let image = directory.file("misleading.raw")
        try ProcessRunner.check("qemu-img", ["create", "-q", "-f", "vpc", "-o", "subformat=fixed", image, "8M"])
        #expect(try VirtualDisk.open(image).facts.format == .vhd)
        let vhdx = directory.file("other.vhd")
        try ProcessRunner.check("qemu-img", ["create", "-q", "-f", "vhdx", vhdx, "8M"])
        #expect(try VirtualDisk.open(vhdx).facts.format == .vhdx)
        let raw = directory.file("plain.vhdx")
        #expect(FileManager.default.createFile(atPath: raw, contents: Data(count: 1 << 20)))
        #expect(throws: VHDError.unrecognizedFormat(path: raw)) { try VirtualDisk.open(raw) }
        #expect(try VirtualDisk.open(raw, options: .init(format: .raw)).virtualSize == 1 << 20)
    }
}
