import Foundation
@testable import VHDFormat

/// What a disk should contain, kept in memory, and helpers to compare images with it.
struct DiskModel {
    var bytes: [UInt8]

    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    /// Writes a recognizable pattern (seeded, so each write differs) to the model and the disk.
    mutating func write(_ disk: VirtualDisk, at offset: Int, count: Int, seed: UInt8) throws {
        let pattern = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7) ^ seed }
        bytes.replaceSubrange(offset..<offset + count, with: pattern)
        try disk.write(at: UInt64(offset), bytes: pattern)
    }
}

enum FileCompare {
    /// The whole content of a file (test images are small).
    static func contents(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ToolFailed(description: "cannot read \(path)")
        }
        return [UInt8](data)
    }

    /// The first differing offset, for a readable failure.
    static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
        if a.count != b.count { return min(a.count, b.count) }
        // memcmp first: a byte loop over tens of MiB is slow in debug builds.
        let equal = a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
        if equal || a.isEmpty { return nil }
        return a.indices.first { a[$0] != b[$0] }
    }

    static func flattened(_ path: String) throws -> [UInt8] {
        let disk = try VirtualDisk.open(path)
        return try disk.read(at: 0, count: Int(disk.virtualSize))
    }
}

enum Qemu {
    /// The qemu-img format name of a VHD is vpc, and it must always be given (a fixed VHD probes as raw).
    static func formatName(_ format: ImageFormat) -> String { format == .vhd ? "vpc" : format.rawValue }

    static func rawContents(_ image: String, format: ImageFormat, in directory: TestDirectory) throws -> [UInt8] {
        let raw = directory.file("qemu-\(UUID().uuidString.prefix(6)).raw")
        defer { try? FileManager.default.removeItem(atPath: raw) }
        try ProcessRunner.check("qemu-img", ["convert", "-f", formatName(format), "-O", "raw", image, raw])
        return try FileCompare.contents(raw)
    }
}
