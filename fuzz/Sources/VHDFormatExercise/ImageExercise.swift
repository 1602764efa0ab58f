import Foundation
import VHDFormat

/// Everything the filesystem does with an image on the volume, run on one sparse-image input: facts,
/// chain resolution, reads over the allocation map, and (each on a fresh copy) writes, check and repair,
/// and merge into a parent. A damaged image may refuse any step with a `VHDError`; any other error, or
/// data that reads back differently from what the library promised, is a failure. Shared by the fuzz
/// target and the corpus replay test, so CI replays exactly what the fuzzer ran.
public final class ImageExercise {
    private let input: [UInt8]
    private let directory: String
    private var failures: [String] = []
    private var refusals: [String] = []

    public struct Outcome: Sendable {
        /// Errors other than VHDError, and data that read back wrong: each is a defect.
        public var failures: [String]
        /// Steps the image refused with a VHDError, with the error: expected of damaged images only.
        public var refusals: [String]
    }
    private var imagePath: String { directory + "/image" }

    /// Largest disk whose whole allocation map is walked and whose chain gets a parent (keeps inputs fast).
    static let walkedDiskSize: UInt64 = 256 << 20

    /// Runs every step on `input` in `directory` (emptied before and after).
    public static func run(_ input: [UInt8], in directory: String) -> Outcome {
        let exercise = ImageExercise(input: input, directory: directory)
        exercise.runAll()
        return Outcome(failures: exercise.failures, refusals: exercise.refusals)
    }

    private init(input: [UInt8], directory: String) {
        self.input = input
        self.directory = directory
    }

    private func runAll() {
        // Nothing of this input may be found by the next one (a locator naming the same parent).
        defer { emptyDirectory() }
        // Two layouts: merging leaves the child as it was, and repair after writes is what a disk in use gets.
        guard layOut() else { return }
        readEverything()
        attempt("check") { _ = try DiskChecker.check(imagePath) }
        mergeCopy()
        guard layOut() else { return }
        writeToCopy()
        checkAndRepairCopy()
    }

    private func fail(_ message: String) { failures.append(message) }

    /// A VHDError is how a damaged image answers; anything else is a failure.
    @discardableResult
    private func attempt<T>(_ step: String, _ body: () throws -> T) -> T? {
        do {
            return try body()
        } catch let error as VHDError {
            refusals.append("\(step): \(error)")
            return nil
        } catch {
            fail("\(step): \(type(of: error)): \(error)")
            return nil
        }
    }

    /// Writes the input's image afresh (and, for a differencing image, a parent where its locator
    /// points), so each mutating step starts from the same bytes.
    private func layOut() -> Bool {
        emptyDirectory()
        guard SparseImage.materialize(input, at: imagePath) else { return false }
        guard let facts = attempt("open top", { try VirtualDisk.open(imagePath, options: .init(topOnly: true)).facts }),
              let link = facts.parent, facts.virtualSize <= Self.walkedDiskSize else { return true }
        // The parent's file name, taken from the name or a locator, made in this directory only.
        let names = ([link.name ?? ""] + link.locators.map(\.path))
            .map { ($0.replacingOccurrences(of: "\\", with: "/") as NSString).lastPathComponent }
        guard let name = names.first(where: { !$0.isEmpty && $0 != "." && $0 != ".." && $0 != "image" && !$0.contains("\0") })
        else { return true }
        let parentPath = directory + "/" + name
        attempt("create parent") {
            try DiskCreator.create(at: parentPath, options: .init(format: facts.format, type: .dynamic,
                                                                  virtualSize: facts.virtualSize, blockSize: 1 << 20))
            let parent = try VirtualDisk.open(parentPath, options: .init(writable: true))
            try parent.write(at: 0, bytes: Self.pattern(count: Int(min(65536, parent.virtualSize / 512 * 512)), seed: 1))
            try parent.close()
        }
        return true
    }

    private func emptyDirectory() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            unlink(directory + "/" + name)
        }
    }

    static func pattern(count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7 &+ 1) }
    }

    /// Facts, the chain, and reads: the first ranges by `resolve`, the whole map when the disk is small.
    private func readEverything() {
        guard let disk = attempt("open", { try VirtualDisk.open(imagePath, options: .init(allowParentMismatch: true)) }) else { return }
        for facts in disk.chain { _ = facts.extendedAttributes }
        let size = disk.virtualSize
        attempt("read by resolve") {
            var offset: UInt64 = 0
            for _ in 0..<32 where offset < size {
                let (length, source) = try disk.resolve(at: offset, limit: 1 << 20)
                guard length > 0, length <= size - offset else {
                    fail("resolve at \(offset) gave \(length) bytes of a \(size)-byte disk")
                    return
                }
                let bytes = try disk.read(at: offset, count: Int(min(length, 16384)))
                if source == .zero, bytes.contains(where: { $0 != 0 }) { fail("range at \(offset) resolves to zeros but reads non-zero") }
                offset += length
            }
            _ = try disk.read(at: size - min(size, 4096), count: Int(min(size, 4096)))
        }
        if size <= Self.walkedDiskSize {
            attempt("allocation map") {
                let map = try disk.allocationMap()
                var expected: UInt64 = 0
                for range in map {
                    if range.offset != expected || range.length == 0 { fail("map range \(range) after \(expected)") }
                    expected = range.offset + range.length
                }
                if expected != size { fail("map covers \(expected) of \(size) bytes") }
                _ = try disk.allocatedByteCount()
                try disk.forEachDataRange(maximumLength: 1 << 20) { offset, length in
                    if length == 0 || offset >= size || length > size - offset { fail("data range \(offset)+\(length) of \(size)") }
                }
            }
        }
        do {
            _ = try disk.resolve(at: size, limit: 1)
            fail("resolve at the end of the disk succeeded")
        } catch {}
    }

    /// Writes aligned and unaligned pieces; each must read back as written, also after reopening.
    private func writeToCopy() {
        guard let disk = attempt("open writable", { try VirtualDisk.open(imagePath, options: .init(writable: true, allowParentMismatch: true)) })
        else { return }
        let size = disk.virtualSize
        let pieces: [(offset: UInt64, bytes: [UInt8])] = [
            (0, Self.pattern(count: Int(min(size, 4096)), seed: 2)),
            (size / 2 + min(size / 2, 7), Self.pattern(count: Int(min(size - (size / 2 + min(size / 2, 7)), 1000)), seed: 3)),
            (size - min(size, 512), Self.pattern(count: Int(min(size, 512)), seed: 4)),
        ]
        var written: [(offset: UInt64, bytes: [UInt8])] = []
        for piece in pieces {
            guard attempt("write at \(piece.offset)", { try disk.write(at: piece.offset, bytes: piece.bytes) }) != nil else { return }
            written.append(piece)
            verify(written, on: disk, when: "after writing at \(piece.offset)")
        }
        guard attempt("close", { try disk.close() }) != nil else { return }
        guard let reopened = attempt("reopen", { try VirtualDisk.open(imagePath, options: .init(allowParentMismatch: true)) }) else {
            fail("an image written and closed does not open again")
            return
        }
        verify(written, on: reopened, when: "after reopening")
    }

    /// Each piece as the writes in order leave it.
    private func verify(_ written: [(offset: UInt64, bytes: [UInt8])], on disk: VirtualDisk, when: String) {
        for (index, piece) in written.enumerated() {
            var expected = piece.bytes
            for later in written[(index + 1)...] {
                let lower = max(piece.offset, later.offset)
                let upper = min(piece.offset + UInt64(piece.bytes.count), later.offset + UInt64(later.bytes.count))
                guard lower < upper else { continue }
                expected.replaceSubrange(Int(lower - piece.offset)..<Int(upper - piece.offset),
                                         with: later.bytes[Int(lower - later.offset)..<Int(upper - later.offset)])
            }
            guard let actual = attempt("read back", { try disk.read(at: piece.offset, count: piece.bytes.count) }) else {
                fail("written range at \(piece.offset) cannot be read \(when)")
                continue
            }
            if actual != expected { fail("range at \(piece.offset) reads differently than written \(when)") }
        }
    }

    /// Repair; an image check then calls clean must open.
    private func checkAndRepairCopy() {
        guard let report = attempt("repair", { try DiskChecker.check(imagePath, repair: true) }), report.isClean else { return }
        guard let disk = attempt("open after repair", { try VirtualDisk.open(imagePath) }) else {
            fail("check --repair reports a clean image that does not open")
            return
        }
        attempt("read after repair") { _ = try disk.read(at: 0, count: Int(min(disk.virtualSize, 65536))) }
    }

    /// Merges into the parent; afterwards the parent alone reads as the chain did (checked at the start and end).
    private func mergeCopy() {
        guard let chain = attempt("open chain", { try VirtualDisk.open(imagePath, options: .init(allowParentMismatch: true)) }),
              chain.chain.count > 1, chain.chain[1].path.hasPrefix(directory + "/") else { return }
        // Only a parent made here is written: a locator may name any file on the host.
        let size = chain.virtualSize
        let probes = [(UInt64(0), Int(min(size, 1 << 20))), (size - min(size, 65536), Int(min(size, 65536)))]
        guard let before = attempt("read chain", { try probes.map { try chain.read(at: $0.0, count: $0.1) } }),
              let parentPath = attempt("merge", { try DiskMerger.merge(child: imagePath, allowParentMismatch: true) }) else { return }
        guard let parent = attempt("open merged parent", { try VirtualDisk.open(parentPath, options: .init(topOnly: true)) }) else {
            fail("the parent does not open after a merge that succeeded")
            return
        }
        guard parent.virtualSize >= size else { return }
        guard let after = attempt("read merged parent", { try probes.map { try parent.read(at: $0.0, count: $0.1) } }) else {
            fail("the merged parent cannot be read")
            return
        }
        if after != before { fail("the merged parent reads differently than the chain did") }
    }
}
