import Foundation
import Testing
@testable import VHDFormat
import VHDFormatExercise

/// Every input of the fuzz corpus (the seeds and each crash a run found) through the fuzz target's own
/// exercise, so CI catches a regression without the fuzzer: each step works or refuses with a VHDError.
/// A trap kills this test process, which fails the run.
@Suite struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fuzz/corpus").path

    static var inputs: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: corpus)) ?? []).sorted()
    }

    static func input(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: corpus + "/" + name)))
    }

    @Test func corpusHoldsTheSeedsAndTheFindings() {
        #expect(Self.inputs.filter { $0.hasSuffix(".seed") }.count >= 13)
        #expect(Self.inputs.contains("finding-vhdx-check-overflow.fuzz"))
    }

    @Test(arguments: inputs)
    func replays(_ name: String) throws {
        let directory = try TestDirectory()
        let outcome = ImageExercise.run(try Self.input(name), in: directory.path)
        #expect(outcome.failures.isEmpty, "\(outcome.failures)")
        // Seeds are healthy images: every step must work on them, or the exercise proves nothing.
        if name.hasSuffix(".seed") { #expect(outcome.refusals.isEmpty, "\(outcome.refusals)") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    /// A VHD BAT of 65,000 bad entries: found in linear time (a list of bad entries made check take
    /// minutes) and reported as the first hundred and a count, not 65,000 lines.
    @Test func manyBadEntriesAreCountedNotListed() throws {
        let directory = try TestDirectory()
        let image = directory.file("many.vhd")
        #expect(SparseImage.materialize(try Self.input("finding-vhd-many-bad-bat-entries.fuzz"), at: image))
        let report = try DiskChecker.check(image)
        #expect(report.problems.count <= BadTableEntries.messageLimit + 2, "\(report.problems.count) problems")
        #expect(report.problems.contains { $0.hasSuffix("more problems in the VHD BAT") })
        #expect(throws: VHDError.self) { try VirtualDisk.open(image) }
    }

    /// The finding's image is refused with a clear error, in the library as in `vhdtool check`.
    @Test func findingIsRefusedAsCorrupt() throws {
        let directory = try TestDirectory()
        let image = directory.file("finding.vhdx")
        #expect(SparseImage.materialize(try Self.input("finding-vhdx-check-overflow.fuzz"), at: image))
        #expect(throws: VHDError.self) { try VirtualDisk.open(image) }
        let report = try DiskChecker.check(image)
        #expect(report.problems.contains { $0.contains("corrupt: VHDX BAT entry 42 points to 18446744073708503040") }, "\(report.problems)")
        let result = try VhdtoolCommandTests.run(["check", image])
        #expect(result.status == 2, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("corrupt: VHDX BAT entry"))
        #expect(!result.stderr.contains("Fatal") && !result.stderr.contains("runtime failure"))
    }
}
