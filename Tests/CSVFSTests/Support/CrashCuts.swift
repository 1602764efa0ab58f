import Foundation
import Glibc
import CSVFSSystem
import Primitives
import TestSupport

/// The LUN images a power cut could leave, from the log of a mount's writes and flushes (CrashMonkey's way):
/// at each flush point, every write before it; and between one flush and the next, every write the flushes
/// so far made durable plus a random subset of the others, as a device's volatile cache may have kept any of
/// them, in any order. A write counts as one piece, kept or lost whole.
struct CrashCuts {
    struct Cut: CustomStringConvertible {
        let description: String
        /// The log position of the cut: the end of the last record before it.
        let position: Int64
        /// The writes on the cut image, indices into `entries`, in log order.
        let writes: [Int]
    }

    let entries: [LUNWriteLog.Entry]
    /// Each successful flush: where it started and ended, indices into `entries`, in the order they ended.
    let flushes: [(started: Int, ended: Int)]

    init(_ entries: [LUNWriteLog.Entry]) throws {
        self.entries = entries
        var started: [UInt64: Int] = [:]
        var flushes: [(started: Int, ended: Int)] = []
        for (index, entry) in entries.enumerated() {
            switch entry.record {
            case .write: break
            case .flushStarted(let id): started[id] = index
            case .flushEnded(let id, let errno):
                guard let start = started.removeValue(forKey: id) else { throw FixtureError("the LUN write log ends flush \(id) it never started") }
                if errno == 0 { flushes.append((start, index)) }
            }
        }
        self.flushes = flushes
    }

    var writeCount: Int { entries.filter { if case .write = $0.record { true } else { false } }.count }

    /// The writes before `end` (an entry index) that a flush ended before it covers: all those before the
    /// latest start among those flushes.
    private func durableLimit(before end: Int) -> Int {
        flushes.filter { $0.ended < end }.map(\.started).max() ?? 0
    }

    private func writes(in range: Range<Int>) -> [Int] {
        range.filter { if case .write = entries[$0].record { true } else { false } }
    }

    /// Every write of the log: what the LUN holds once the logged mount has ended.
    var everything: Cut {
        Cut(description: "the end of the log", position: entries.last?.end ?? 0, writes: writes(in: entries.indices))
    }

    /// A cut just after flush `index` returned, with every write before it on the image.
    func flushPoint(_ index: Int) -> Cut {
        let end = flushes[index].ended + 1
        return Cut(description: "flush point \(index + 1) of \(flushes.count) (log entry \(end))",
                   position: entries[end - 1].end, writes: writes(in: 0..<end))
    }

    /// The entries after flush `index` up to the next flush's end (the log's end after the last): where a
    /// cut between them is taken.
    private func epoch(_ index: Int) -> Range<Int> {
        (flushes[index].ended + 1)..<(index + 1 < flushes.count ? flushes[index + 1].ended : entries.count)
    }

    /// Writes an epoch's cut may keep or lose: those before its end that no flush ended before it covers.
    func undecided(in index: Int) -> [Int] {
        let end = epoch(index).upperBound
        return writes(in: durableLimit(before: end)..<end)
    }

    /// A cut at the end of epoch `index` (just before the next flush returned): the durable writes, and each
    /// undecided one kept or lost at random.
    func subset(of index: Int, using random: inout SeededRandom) -> Cut {
        let end = epoch(index).upperBound
        let limit = durableLimit(before: end)
        let undecided = writes(in: limit..<end)
        let kept = undecided.filter { _ in Bool.random(using: &random) }
        return Cut(description: "after flush point \(index + 1) of \(flushes.count): \(kept.count) of the \(undecided.count) undecided writes (log entries \(limit)..<\(end)) kept, the rest lost",
                   position: entries[end - 1].end, writes: writes(in: 0..<limit) + kept)
    }

    /// The cuts a run tries: `limit` of them (nil: all), half flush points spread evenly over the log (the
    /// last one always), half subsets of epochs picked at random; with no limit, every flush point and three
    /// subsets of each epoch with undecided writes.
    func choose(limit: Int?, using random: inout SeededRandom) -> [Cut] {
        let open = flushes.indices.filter { !undecided(in: $0).isEmpty }
        guard let limit else {
            return flushes.indices.map(flushPoint) + open.flatMap { epoch in (0..<3).map { _ in subset(of: epoch, using: &random) } }
        }
        let points = min(flushes.count, (limit + 1) / 2)
        let spread = points == 0 ? [] : (1...points).map { flushes.count * $0 / points - 1 }
        let cuts = spread.map(flushPoint)
        guard !open.isEmpty else { return cuts }
        return cuts + (0..<(limit - points)).map { _ in subset(of: open.randomElement(using: &random)!, using: &random) }
    }
}

/// A LUN image as it was before the logged mount (its data segments, holes left out), written out again with
/// a cut's writes on it.
struct BaseImage {
    let size: Int64
    let segments: [(offset: Int64, bytes: [UInt8])]

    init(copying path: String) throws {
        let fd = try sys("open \(path)") { open(path, O_RDONLY) }
        defer { close(fd) }
        var info = stat()
        _ = try sys("fstat \(path)") { fstat(fd, &info) }
        size = Int64(info.st_size)
        var segments: [(Int64, [UInt8])] = []
        var offset: off_t = 0
        while offset < info.st_size {
            let data = lseek(fd, offset, Int32(CSVFS_SEEK_DATA))
            if data < 0 && errno == ENXIO { break }
            guard data >= 0 else { throw SyscallError(call: "lseek SEEK_DATA \(path)", code: errno) }
            let hole = try sys("lseek SEEK_HOLE \(path)") { Int(lseek(fd, data, Int32(CSVFS_SEEK_HOLE))) }
            var bytes = [UInt8](repeating: 0, count: hole - Int(data))
            let count = try sys("pread \(path)") { bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, data) } }
            guard count == bytes.count else { throw FixtureError("short read of \(path) at \(data)") }
            segments.append((Int64(data), bytes))
            offset = off_t(hole)
        }
        self.segments = segments
    }

    /// Replaces `path` by this image with `cut`'s writes applied in log order.
    func write(to path: String, with cut: CrashCuts.Cut, of cuts: CrashCuts) throws {
        let fd = try sys("open \(path)") { open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
        defer { close(fd) }
        _ = try sys("ftruncate \(path)") { ftruncate(fd, off_t(size)) }
        for segment in segments { try writeAll(fd, segment.bytes, at: Int(segment.offset)) }
        for index in cut.writes {
            guard case .write(let offset, let bytes) = cuts.entries[index].record else { continue }
            try writeAll(fd, bytes, at: Int(offset))
        }
    }
}
