#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An image file for positional I/O, over any `ImageStorage`. A VHDX with an unreplayed log opened read-only
/// carries the log's writes as an in-memory overlay, so readers see the replayed state while the file stays untouched.
final class ImageFile {
    let path: String
    let writable: Bool
    private let storage: any ImageStorage
    private(set) var overlay = LogOverlay()

    init(path: String, writable: Bool, create: Bool = false) throws {
        self.path = path
        self.writable = writable
        storage = try POSIXImageStorage(path: path, writable: writable, create: create)
    }

    /// `path` names the file in messages and is where relative parent locators start.
    init(storage: any ImageStorage, path: String) {
        self.path = path
        writable = storage.isWritable
        self.storage = storage
    }

    /// The size readers see: the file's, or larger when a replayed log extends it.
    func size() throws -> UInt64 {
        max(try storage.size(), overlay.extendedSize)
    }

    func setOverlay(_ overlay: LogOverlay) { self.overlay = overlay }

    /// pread and pwrite take a signed offset: a position past 2^63, which only a damaged image names,
    /// is refused instead of trapping in the conversion.
    private func fileOffset(_ offset: UInt64, count: Int, what: String) throws -> UInt64 {
        let range = try CheckedImageMath(path: path).range(what, offset: offset, length: UInt64(count),
                                                           within: UInt64(off_t.max), of: "largest possible file")
        return range.lowerBound
    }

    /// Reads exactly `buffer.count` bytes; a short read means the file ends inside a structure.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, what: String) throws {
        let start = try fileOffset(offset, count: buffer.count, what: what)
        let done = buffer.count == 0 ? 0 : try storage.read(at: start, into: buffer)
        if done < buffer.count {
            // Past the physical end: only a replayed log may legitimately extend the file.
            let end = offset + UInt64(buffer.count)
            guard end <= overlay.extendedSize else {
                throw VHDError.truncated(path: path, what: what, needed: end, fileSize: try size())
            }
            (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
        }
        if !overlay.isEmpty { overlay.apply(to: buffer, at: offset) }
    }

    func read(at offset: UInt64, count: Int, what: String) throws -> [UInt8] {
        guard count >= 0 else { throw VHDError.invalidArgument("negative read length for \(what)") }
        var bytes = [UInt8](repeating: 0, count: count)
        if count > 0 {
            try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0, what: what) }
        }
        return bytes
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard writable else { throw VHDError.readOnly(path: path) }
        try storage.write(at: try fileOffset(offset, count: buffer.count, what: "write"), from: buffer)
    }

    func write(at offset: UInt64, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(at: offset, from: $0) }
    }

    /// The parts of `offset..<offset+length` that hold data in the file system; holes read as zeros
    /// and need not be read at all. Without hole support the whole range counts as data.
    func dataRuns(at offset: UInt64, length: UInt64) -> [(offset: UInt64, length: UInt64)] {
        // A replayed log may have put bytes into a hole: only the file alone can be trusted here.
        // Past the largest file offset lseek cannot say; reading there fails with a clear error instead.
        guard overlay.isEmpty, let end = try? CheckedImageMath(path: path).range(
            "data", offset: offset, length: length, within: UInt64(off_t.max), of: "largest possible file").upperBound
        else { return [(offset, length)] }
        return storage.dataRuns(at: offset, upTo: end) ?? [(offset, length)]
    }

    func truncate(to size: UInt64) throws {
        try storage.truncate(to: try fileOffset(size, count: 0, what: "new file size"))
    }

    func sync() throws {
        try storage.sync()
    }
}

/// Writes of a VHDX log, kept in memory for read-only opens. Applied in log order on every read.
struct LogOverlay {
    enum Write {
        case data(offset: UInt64, bytes: [UInt8])
        case zero(offset: UInt64, length: UInt64)
    }

    private(set) var writes: [Write] = []
    private(set) var extendedSize: UInt64 = 0

    var isEmpty: Bool { writes.isEmpty }

    mutating func add(_ write: Write) { writes.append(write) }
    mutating func extend(to size: UInt64) { extendedSize = max(extendedSize, size) }

    func apply(to buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) {
        let end = offset + UInt64(buffer.count)
        for write in writes {
            switch write {
            case let .data(start, bytes):
                let lower = max(start, offset), upper = min(start + UInt64(bytes.count), end)
                guard lower < upper else { continue }
                bytes.withUnsafeBytes { source in
                    (buffer.baseAddress! + Int(lower - offset)).copyMemory(
                        from: source.baseAddress! + Int(lower - start), byteCount: Int(upper - lower))
                }
            case let .zero(start, length):
                let lower = max(start, offset), upper = min(start + length, end)
                guard lower < upper else { continue }
                (buffer.baseAddress! + Int(lower - offset)).initializeMemory(
                    as: UInt8.self, repeating: 0, count: Int(upper - lower))
            }
        }
    }
}
