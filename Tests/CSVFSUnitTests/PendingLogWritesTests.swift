@testable import CSVFS
import Foundation
import Glibc
import TestSupport
import Testing

/// The gathered, page-padded log writes against a model that applies every write as SQLite made it: after each
/// flush the file must hold the model's bytes up to the end of the current log, and nothing before the log may
/// change. Schedules are seeded: log headers (a new log), frames, commits, in-place rewrites, truncations.
struct PendingLogWritesTests {
    static let logStart: Int64 = 8192
    static let guardByte: UInt8 = 0xA5

    struct Model {
        var bytes: [UInt8] = []
        var end: Int64 = 0
        mutating func write(_ data: [UInt8], at offset: Int64) {
            let position = Int(offset - PendingLogWritesTests.logStart)
            if bytes.count < position + data.count { bytes += [UInt8](repeating: 0, count: position + data.count - bytes.count) }
            bytes.replaceSubrange(position..<(position + data.count), with: data)
            end = max(end, offset + Int64(data.count))
        }
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func matchesTheModelAfterEveryFlush(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pending-log-\(getpid())-\(seed)").path
        defer { unlink(path) }
        let file = try FileDescriptor.open(path, O_RDWR | O_CREAT | O_TRUNC)
        defer { file.close() }
        try file.write([UInt8](repeating: Self.guardByte, count: Int(Self.logStart)), at: 0)

        var pending = PendingLogWrites(logStart: Self.logStart)
        var model = Model()
        var frames: [Int64] = []        // offsets of the current log's frames
        let frameSize = Int64(PendingLogWrites.frameHeaderSize + 4096)

        func randomBytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 1...255, using: &random) } }
        func add(_ data: [UInt8], at offset: Int64) throws {
            try data.withUnsafeBytes { try pending.add($0, at: offset, lun: file) }
            model.write(data, at: offset)
        }
        func newLog() throws {
            model = Model()
            frames = []
            try add(randomBytes(32), at: Self.logStart)
        }
        func check() throws {
            try pending.flush(lun: file)
            let length = Int(model.end - Self.logStart)
            let onDisk = try file.read(count: length, at: Self.logStart)
            #expect(onDisk == Array(model.bytes[0..<length]), "seed \(seed): log differs from the model")
            let before = try file.read(count: Int(Self.logStart), at: 0)
            #expect(before.allSatisfy { $0 == Self.guardByte }, "seed \(seed): a write landed before the log")
        }

        try newLog()
        for _ in 0..<600 {
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<70:
                // A frame: its header (commit field set on about a third), then its page.
                let offset = Self.logStart + 32 + Int64(frames.count) * frameSize
                var header = randomBytes(PendingLogWrites.frameHeaderSize)
                if Bool.random(using: &random) { header.replaceSubrange(4..<8, with: [0, 0, 0, 0]) }
                try add(header, at: offset)
                try add(randomBytes(4096), at: offset + Int64(PendingLogWrites.frameHeaderSize))
                frames.append(offset)
            case 70..<80 where !frames.isEmpty:
                // SQLite rewrites a frame of the open transaction in place.
                let offset = frames.suffix(4).randomElement(using: &random)!
                try add(randomBytes(Int(frameSize)), at: offset)
            case 80..<90:
                try check()
            case 90..<95:
                try check()
                try newLog()
            default:
                try check()
                pending.forgetEnd()
                try newLog()
            }
            if model.end - Self.logStart > 2 << 20 {
                try check()
                try newLog()
            }
        }
        try check()
    }
}
