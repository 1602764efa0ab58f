@testable import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// The data path in-process against a plain-array model: writes at every alignment and size, across extent
/// boundaries, holes, unwritten extents and blocks another file freed, on a LUN with O_DIRECT (ext4) and on one
/// without it (tmpfs, everything buffered), through both I/O engines.
@Suite(.serialized)
struct DataPathTests {
    /// The LUN's descriptors for file data: O_DIRECT (the LUN image on ext4), or only the buffered one, as for
    /// a medium without O_DIRECT (tmpfs on kernels before 6.6; this kernel's tmpfs takes O_DIRECT).
    enum Medium: String, CaseIterable, CustomTestStringConvertible {
        case direct, buffered
        var testDescription: String { rawValue }
    }

    static let root = Caller(uid: 0, gid: 0)
    static let fileSpan = 3 << 20

    /// Formats a LUN image, opens it, runs `body` with its metadata service and a data path on `medium` with
    /// `io`, closes and removes everything.
    func withVolume(on medium: Medium, io: LUNIOMode, _ body: (Volume, DataPath) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-datapath-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let lun = directory.appendingPathComponent("lun.img").path
        _ = try VolumeFormatter.format(path: lun, size: 64 << 20, force: false)
        let volume = try Volume.open(path: lun, io: io)
        defer { volume.close() }
        try #require(volume.data.isDirect, "the LUN image takes O_DIRECT")
        guard medium == .buffered else { return try body(volume, volume.data) }
        let device = volume.device
        let data = try DataPath(service: volume.service, device: LUNDevice(path: device.path, fd: device.fd, direct: nil), io: io)
        defer { data.close() }
        try #require(!data.isDirect)
        try body(volume, data)
    }

    /// The first index where the two differ, if any (the arrays themselves are too long for a failure message).
    func firstDifference(_ got: [UInt8], _ expected: [UInt8]) -> Int? {
        if let index = got.indices.first(where: { $0 < expected.count && got[$0] != expected[$0] }) { return index }
        return got.count == expected.count ? nil : min(got.count, expected.count)
    }

    func create(_ volume: Volume, _ name: String) throws -> UInt64 {
        try volume.service.createNode(parent: 1, name: Array(name.utf8), mode: UInt32(S_IFREG) | 0o644, rdev: 0,
                                      symlinkTarget: nil, caller: Self.root).ino
    }

    func write(_ data: DataPath, _ ino: UInt64, _ bytes: [UInt8], at offset: Int64) throws {
        try bytes.withUnsafeBytes { try data.write(ino, offset: offset, data: $0) }
    }

    func read(_ data: DataPath, _ ino: UInt64, count: Int, at offset: Int64) throws -> [UInt8] {
        try data.read(ino, offset: offset, count: count) { Array($0) }
    }

    /// A write size: mostly small and unaligned, sometimes whole blocks, sometimes up to 1 MiB.
    static func size(_ random: inout SeededRandom) -> Int {
        switch Int.random(in: 0..<10, using: &random) {
        case 0..<4: return Int.random(in: 1...600, using: &random)
        case 4..<7: return Int.random(in: 1...20_000, using: &random)
        case 7: return 4096 * Int.random(in: 1...8, using: &random)
        default: return Int.random(in: 1...(1 << 20), using: &random) / (Int.random(in: 0..<4, using: &random) == 0 ? 1 : 8)
        }
    }

    static func offset(_ random: inout SeededRandom, size: Int) -> Int64 {
        let offset = Int64.random(in: 0...Int64(fileSpan - size), using: &random)
        // A third of them block-aligned, so aligned and unaligned writes meet in the same blocks.
        return Int.random(in: 0..<3, using: &random) == 0 ? offset / 4096 * 4096 : offset
    }

    @Test(arguments: Medium.allCases, LUNIOMode.allCases)
    func writesMatchAModel(medium: Medium, io: LUNIOMode) throws {
        let seed = SeededRandom.seed(from: "CSVFS_DATAPATH_SEED", test: "writesMatchAModel(\(medium), \(io))")
        var random = SeededRandom(seed: seed)
        try withVolume(on: medium, io: io) { volume, data in
            // Two files written in turn, so each one's extents alternate with the other's on the LUN.
            let files = [try create(volume, "a"), try create(volume, "b")]
            var models: [[UInt8]] = [[], []]
            // A third file full of 0xEE whose blocks are freed before anything else is written: what reuses
            // them must never show its bytes.
            let stale = try create(volume, "stale")
            try write(data, stale, [UInt8](repeating: 0xEE, count: 4 << 20), at: 0)
            try volume.service.unlink(parent: 1, name: Array("stale".utf8))
            try volume.service.sync()

            for step in 0..<80 {
                let which = Int.random(in: 0..<2, using: &random)
                let ino = files[which]
                let action = Int.random(in: 0..<20, using: &random)
                let context = "seed \(seed) step \(step) file \(which)"
                switch action {
                case 0:
                    // Unwritten extents: allocated, reading as zeros, which the next writes only partly cover.
                    let start = Int64.random(in: 0..<Int64(Self.fileSpan - 65536), using: &random)
                    let length = Int64.random(in: 1...65536, using: &random)
                    try data.fallocate(ino, start..<(start + length), mode: .allocate(keepSize: true))
                case 1:
                    let start = Int64.random(in: 0..<Int64(Self.fileSpan - 65536), using: &random)
                    let length = Int64.random(in: 1...65536, using: &random)
                    try data.fallocate(ino, start..<(start + length), mode: .punchHole)
                    let end = min(Int(start + length), models[which].count)
                    if Int(start) < end {
                        models[which].replaceSubrange(Int(start)..<end, with: repeatElement(0, count: end - Int(start)))
                    }
                case 2:
                    let size = Int.random(in: 0...Self.fileSpan, using: &random)
                    _ = try data.truncate(ino, AttributeChanges(size: UInt64(size)))
                    if size < models[which].count {
                        models[which].removeLast(models[which].count - size)
                    } else {
                        models[which] += repeatElement(0, count: size - models[which].count)
                    }
                default:
                    let size = Self.size(&random)
                    let offset = Self.offset(&random, size: size)
                    // A pattern of its own per write (cheaper than a random byte each), never 0 or 0xEE (the deleted file's byte).
                    let base = UInt32.random(in: 0..<UInt32.max, using: &random)
                    let bytes = (0..<size).map { UInt8(truncatingIfNeeded: (base &+ UInt32(truncatingIfNeeded: $0) &* 2_654_435_761) >> 24) % 0xED + 1 }
                    try write(data, ino, bytes, at: offset)
                    let end = Int(offset) + size
                    if models[which].count < end { models[which] += repeatElement(0, count: end - models[which].count) }
                    models[which].replaceSubrange(Int(offset)..<end, with: bytes)
                    // The blocks around the write, where read-modify-write could go wrong.
                    let around = max(0, Int(offset) - 4096)..<min(models[which].count, end + 4096)
                    let got = try read(data, ino, count: around.count, at: Int64(around.lowerBound))
                    let difference = firstDifference(got, Array(models[which][around])).map { $0 + around.lowerBound }
                    try #require(difference == nil, "\(context): bytes around a write of \(size) at \(offset)")
                }
                try #require(try volume.service.attributes(ino).size == UInt64(models[which].count), "\(context): size")
            }
            for (ino, model) in zip(files, models) {
                let got = try read(data, ino, count: model.count + 4096, at: 0)
                let difference = firstDifference(got, model)
                #expect(difference == nil, "seed \(seed): whole file \(ino)")
                #expect(!got.contains(0xEE), "seed \(seed): another file's freed bytes showed")
            }
        }
    }

    /// An unaligned write into a block nothing has written pads it with zeros, also where that block held a
    /// deleted file's bytes on the LUN.
    @Test(arguments: Medium.allCases, LUNIOMode.allCases)
    func unwrittenBlocksReadAsZerosAroundAnUnalignedWrite(medium: Medium, io: LUNIOMode) throws {
        try withVolume(on: medium, io: io) { volume, data in
            let stale = try create(volume, "stale")
            try write(data, stale, [UInt8](repeating: 0xEE, count: 1 << 20), at: 0)
            let staleBlocks = try volume.service.mapping(stale, 0..<16384).segments
            try volume.service.unlink(parent: 1, name: Array("stale".utf8))
            try volume.service.sync()
            let file = try create(volume, "file")
            try data.fallocate(file, 0..<(1 << 20), mode: .allocate(keepSize: false))
            try #require(try volume.service.mapping(file, 0..<16384).segments == staleBlocks.map { segment in
                var reused = segment
                reused.unwritten = true
                return reused
            }, "the new file's unwritten blocks are the ones the deleted file wrote")
            try write(data, file, [1, 2, 3], at: 5000)
            try write(data, file, [4, 5], at: 12_287)
            let got = try read(data, file, count: 16384, at: 0)
            var expected = [UInt8](repeating: 0, count: 16384)
            expected.replaceSubrange(5000..<5003, with: [1, 2, 3])
            expected.replaceSubrange(12_287..<12_289, with: [4, 5])
            let difference = firstDifference(got, expected)
            #expect(difference == nil)
        }
    }
}
