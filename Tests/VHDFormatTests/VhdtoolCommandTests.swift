import Foundation
import Testing
@testable import VHDFormat
import TestSupport

/// The vhdtool executable, built beside this test bundle, driven as an admin would.
@Suite struct VhdtoolCommandTests {
    static var tool: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("vhdtool").path
    }

    static func run(_ arguments: [String]) throws -> ProcessResult {
        try ProcessRunner.run(tool, arguments, timeout: 120)
    }

    @Test func createInfoMapAndMerge() throws {
        let directory = try TestDirectory()
        let base = directory.file("base.vhdx"), child = directory.file("child.vhdx")
        var result = try Self.run(["create", "-f", "vhdx", "--block-size", "1M", base, "16M"])
        #expect(result.status == 0, "\(result.stderr)")
        result = try Self.run(["create", "-f", "vhdx", "-b", base, child])
        #expect(result.status == 0, "\(result.stderr)")

        result = try Self.run(["info", "--json", child])
        #expect(result.status == 0, "\(result.stderr)")
        let chain = try JSONDecoder().decode([DiskFacts].self, from: Data(result.stdout.utf8))
        #expect(chain.map(\.type) == [.differencing, .dynamic])
        #expect(chain[0].virtualSize == 16 << 20 && chain[1].blockSize == 1 << 20)
        #expect(chain[0].parent?.identity == chain[1].identity)
        #expect(chain[0].parent?.locators.map(\.kind) == ["relative_path", "absolute_win32_path"])

        // Give the child data through convert against the base, then map and merge it.
        let raw = directory.file("wanted.raw")
        var wanted = [UInt8](repeating: 0, count: 16 << 20)
        for index in (3 << 20)..<((3 << 20) + 10000) { wanted[index] = UInt8(truncatingIfNeeded: index * 7) }
        #expect(FileManager.default.createFile(atPath: raw, contents: Data(wanted)))
        try FileManager.default.removeItem(atPath: child)
        result = try Self.run(["convert", "-p", "-f", "raw", "-O", "vhdx", "-B", base, raw, child])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("(100.0/100%)"))

        result = try Self.run(["map", "--json", child])
        let ranges = try JSONDecoder().decode([MappedRange].self, from: Data(result.stdout.utf8))
        #expect(ranges.contains { $0.depth == 0 && $0.offset <= 3 << 20 && $0.offset + $0.length >= (3 << 20) + 10000 })
        #expect(ranges.reduce(0) { $0 + $1.length } == 16 << 20)

        result = try Self.run(["merge", child])
        #expect(result.status == 0 && result.stdout.contains("Image merged into"), "\(result.stderr)")
        #expect(FileCompare.firstDifference(try FileCompare.flattened(base), wanted) == nil)
        result = try Self.run(["check", base])
        #expect(result.status == 0 && result.stdout.contains("No errors were found"))
    }

    @Test func checkExitCodesAndRepair() throws {
        let directory = try TestDirectory()
        let image = try BadInputTests.sample(.vhd, in: directory)
        try BadInputTests.editVHD(image) { _, bat, _ in bat[5] = 0x00FF_0000 }
        var result = try Self.run(["check", image])
        #expect(result.status == 2)
        #expect(result.stdout.contains("VHD BAT entry 5") && result.stdout.contains("past the end"))
        result = try Self.run(["check", "--repair", image])
        #expect(result.status == 0, "\(result.stdout)")
        #expect(result.stdout.contains("Repaired: unallocated 1 bad BAT entries"))
    }

    @Test func badFilesGiveOneClearLineAndExitOne() throws {
        let directory = try TestDirectory()
        let junk = directory.file("junk.vhdx")
        #expect(FileManager.default.createFile(atPath: junk, contents: Data(repeating: 0x61, count: 5000)))
        var result = try Self.run(["info", junk])
        #expect(result.status == 1)
        #expect(result.stderr.contains("not a VHD or VHDX image"))

        let image = try BadInputTests.sample(.vhdx, in: directory)
        try BadInputTests.truncate(image, to: 300_000)
        result = try Self.run(["convert", "-O", "raw", image, directory.file("out.raw")])
        #expect(result.status == 1)
        #expect(result.stderr.contains("truncated"))
        #expect(!FileManager.default.fileExists(atPath: directory.file("out.raw")))

        result = try Self.run(["create", "-f", "vhd", directory.file("huge.vhd"), "3T"])
        #expect(result.status == 1 && result.stderr.contains("at most 2040 GiB"))
    }
}
