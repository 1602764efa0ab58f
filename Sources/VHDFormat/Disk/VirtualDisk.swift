#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A virtual disk: an image and, for a differencing image, its chain of parents. Reads see the
/// flattened disk; writes go to the top image only (parents are always opened read-only).
public final class VirtualDisk {
    public struct OpenOptions: Sendable {
        /// nil: detect from the content.
        public var format: ImageFormat?
        public var writable: Bool
        /// Accept a parent whose identity differs from what the child recorded.
        public var allowParentMismatch: Bool
        /// Open the top image alone, without resolving its parents (reads of parent data give zeros).
        public var topOnly: Bool

        public init(format: ImageFormat? = nil, writable: Bool = false, allowParentMismatch: Bool = false, topOnly: Bool = false) {
            self.format = format
            self.writable = writable
            self.allowParentMismatch = allowParentMismatch
            self.topOnly = topOnly
        }
    }

    /// Where a range of the flattened disk comes from.
    public enum Source: Equatable, Sendable {
        /// Data held by the image at `depth` (0 is the top) at `fileOffset` in that file.
        case data(depth: Int, fileOffset: UInt64)
        /// Reads as zeros; no image in the chain holds it.
        case zero
    }

    public static let maximumChainDepth = 64

    let layers: [any ImageLayer]
    public let writable: Bool
    private var closed = false

    init(layers: [any ImageLayer], writable: Bool) {
        self.layers = layers
        self.writable = writable
    }

    public static func open(_ path: String, options: OpenOptions = OpenOptions()) throws -> VirtualDisk {
        let top = try FormatDetector.openLayer(try ImageFile(path: path, writable: options.writable), format: options.format)
        return try openChain(top: top, key: realPath(path), options: options,
                             normalize: ParentResolver.normalize) { candidates in
            // Only regular files: a locator naming a FIFO or a device must not block or read forever.
            guard let parentPath = candidates.first(where: isRegularFile) else { return nil }
            return (try ImageFile(path: parentPath, writable: false), realPath(parentPath))
        }
    }

    /// Opens the image in `storage` (writable when the storage is) and its parents through `parents`, for
    /// images that are not host files, as CSVFS's raw view of its own files. `path` names the image and is
    /// where relative parent locators start; `fileIdentity` tells a chain that loops back to it.
    public static func open(storage: any ImageStorage, path: String, fileIdentity: UInt64, parents: any ImageStorageNamespace,
                            options: OpenOptions = OpenOptions()) throws -> VirtualDisk {
        let top = try FormatDetector.openLayer(ImageFile(storage: storage, path: path), format: options.format)
        var options = options
        options.writable = storage.isWritable
        return try openChain(top: top, key: String(fileIdentity), options: options,
                             normalize: ParentResolver.lexicallyNormalized) { candidates in
            for candidate in candidates {
                if let found = try parents.storage(at: candidate) {
                    return (ImageFile(storage: found.storage, path: candidate), String(found.fileIdentity))
                }
            }
            return nil
        }
    }

    /// Follows the parents of `top`: `findParent` opens the first candidate that is there (read-only) and
    /// names the file it is (`key`), so a chain that comes back to one of its files is refused.
    private static func openChain(top: any ImageLayer, key: String, options: OpenOptions, normalize: (String) -> String,
                                  findParent: ([String]) throws -> (file: ImageFile, key: String)?) throws -> VirtualDisk {
        var layers: [any ImageLayer] = [top]
        var visited: Set<String> = [key]
        while !options.topOnly, let link = layers[layers.count - 1].facts.parent {
            let child = layers[layers.count - 1]
            guard layers.count < maximumChainDepth else { throw VHDError.chainTooDeep(path: top.file.path, limit: maximumChainDepth) }
            let candidates = ParentResolver.candidates(for: link, childPath: child.file.path, normalize: normalize)
            guard let (file, parentKey) = try findParent(candidates) else {
                throw VHDError.parentMissing(child: child.file.path, tried: candidates)
            }
            guard visited.insert(parentKey).inserted else { throw VHDError.parentLoop(path: file.path) }
            let parent = try FormatDetector.openLayer(file, format: nil)
            try checkIdentity(child: child, link: link, parent: parent, allowMismatch: options.allowParentMismatch)
            layers.append(parent)
        }
        return VirtualDisk(layers: layers, writable: options.writable)
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFREG
    }

    private static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// VHD: the parent's unique id. VHDX: the parent's DataWriteGuid (parent_linkage or parent_linkage2).
    private static func checkIdentity(child: any ImageLayer, link: ParentLink, parent: any ImageLayer, allowMismatch: Bool) throws {
        let found = parent.facts.identity
        if !ImageLayerFacts(child).accepts(parentIdentity: found), !allowMismatch {
            throw VHDError.parentMismatch(child: child.file.path, parent: parent.file.path, expected: link.identity, found: found)
        }
    }

    public var virtualSize: UInt64 { layers[0].virtualSize }
    public var facts: DiskFacts { layers[0].facts }
    /// The images of the chain, the opened one first.
    public var chain: [DiskFacts] { layers.map(\.facts) }

    /// The source of the bytes at `offset`, for at most `limit` bytes, looking from image `depth` down.
    public func resolve(at offset: UInt64, limit: UInt64, fromDepth depth: Int = 0) throws -> (length: UInt64, source: Source) {
        guard offset < virtualSize else { throw VHDError.outOfRange(offset: offset, length: limit, size: virtualSize) }
        var length = min(limit, virtualSize - offset)
        for index in depth..<layers.count {
            let layer = layers[index]
            guard offset < layer.virtualSize else { return (length, .zero) }
            let extent = try layer.extent(at: offset, limit: length)
            length = extent.length
            switch extent.source {
            case let .data(fileOffset): return (length, .data(depth: index, fileOffset: fileOffset))
            case .zero: return (length, .zero)
            case .parent: continue
            }
        }
        return (length, .zero)
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try read(at: offset, into: buffer, fromDepth: 0)
    }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0 else { throw VHDError.invalidArgument("read of \(count) bytes") }
        try checkRange(offset, UInt64(count))
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        return bytes
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, fromDepth depth: Int) throws {
        try checkRange(offset, UInt64(buffer.count))
        var done: UInt64 = 0
        let total = UInt64(buffer.count)
        while done < total {
            let (length, source) = try resolve(at: offset + done, limit: total - done, fromDepth: depth)
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(done)..<Int(done + length)])
            switch source {
            case let .data(layer, fileOffset):
                try layers[layer].file.read(at: fileOffset, into: part, what: "disk data")
            case .zero:
                part.initializeMemory(as: UInt8.self, repeating: 0)
            }
            done += length
        }
    }

    /// Reads `buffer.count` bytes at `fileOffset` of the image at `depth`, where `resolve` said data lies.
    /// Touches nothing `write` changes, so it may run while another thread writes or resolves, as long as
    /// none of them closes the disk.
    public func readData(depth: Int, at fileOffset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try layers[depth].file.read(at: fileOffset, into: buffer, what: "disk data")
    }

    /// Where in the top image's file `length` bytes at `offset` can be written in place: they are all its
    /// own data already, in one run, and its write session has begun, so writing them changes no structure
    /// of the image. nil when the write must go through `write`.
    public func overwriteTarget(at offset: UInt64, length: UInt64) throws -> UInt64? {
        guard writable, length > 0, layers[0].inPlaceWritesAllowed else { return nil }
        try checkRange(offset, length)
        let (covered, source) = try resolve(at: offset, limit: length)
        guard covered == length, case .data(0, let fileOffset) = source else { return nil }
        return fileOffset
    }

    /// Writes at `fileOffset` of the top image's file, a place `overwriteTarget` gave; like `readData`, safe
    /// beside other threads' reads and writes.
    public func writeData(at fileOffset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard writable else { throw VHDError.readOnly(path: layers[0].file.path) }
        try layers[0].file.write(at: fileOffset, from: buffer)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard writable else { throw VHDError.readOnly(path: layers[0].file.path) }
        try checkRange(offset, UInt64(buffer.count))
        guard buffer.count > 0 else { return }
        let top = layers[0]
        let sector = top.sectorSize
        let lower: LowerReader = { [unowned self] offset, buffer in
            if layers.count > 1 { try read(at: offset, into: buffer, fromDepth: 1) } else { buffer.initializeMemory(as: UInt8.self, repeating: 0) }
        }
        let start = offset / sector * sector
        let end = min((offset + UInt64(buffer.count)).roundedUp(toMultipleOf: sector), virtualSize)
        if start == offset, end == offset + UInt64(buffer.count) {
            try top.write(at: offset, from: buffer, lower: lower)
            return
        }
        // A write that does not cover whole sectors becomes read-modify-write of the sectors it touches.
        var sectors = [UInt8](repeating: 0, count: Int(end - start))
        try sectors.withUnsafeMutableBytes { whole in
            try read(at: start, into: whole)
            UnsafeMutableRawBufferPointer(rebasing: whole[Int(offset - start)...]).copyMemory(from: buffer)
            try top.write(at: start, from: UnsafeRawBufferPointer(whole), lower: lower)
        }
    }

    public func write(at offset: UInt64, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(at: offset, from: $0) }
    }

    private func checkRange(_ offset: UInt64, _ length: UInt64) throws {
        let end = offset.addingReportingOverflow(length)
        guard !end.overflow, end.partialValue <= virtualSize else {
            throw VHDError.outOfRange(offset: offset, length: length, size: virtualSize)
        }
    }

    public func flush() throws { try layers[0].flush() }

    /// Finishes writing (a VHDX clears its log). Reading after close is still possible.
    public func close() throws {
        guard !closed else { return }
        closed = true
        if writable { try layers[0].close() }
    }

    /// Lets the disk go without writing anything more: its writer lost the right to write (CSVFS: fenced, its
    /// ownership gone). What was not flushed is not written; the caller reports that.
    public func discard() { closed = true }

    deinit {
        // A disk dropped without close still gets its metadata written; errors are for close() to report.
        if !closed, writable { try? layers[0].close() }
    }
}
