#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Copies a flattened disk (chains included) into raw, VHD or VHDX. With a base disk it writes a
/// differencing image holding only what differs from the base, as `qemu-img convert -B` does.
public enum DiskConverter {
    public struct Options: Sendable {
        public var sourceFormat: ImageFormat?
        public var outputFormat: ImageFormat
        /// fixed or dynamic; a differencing image comes from `parentPath`.
        public var outputType: DiskType
        public var blockSize: UInt64?
        /// Write a differencing image whose parent is this disk.
        public var parentPath: String?
        public var allowParentMismatch: Bool

        public init(sourceFormat: ImageFormat? = nil, outputFormat: ImageFormat, outputType: DiskType = .dynamic,
                    blockSize: UInt64? = nil, parentPath: String? = nil, allowParentMismatch: Bool = false) {
            self.sourceFormat = sourceFormat
            self.outputFormat = outputFormat
            self.outputType = outputType
            self.blockSize = blockSize
            self.parentPath = parentPath
            self.allowParentMismatch = allowParentMismatch
        }
    }

    /// Called with bytes done and bytes in total.
    public typealias Progress = (UInt64, UInt64) -> Void

    static let chunkSize = 8 << 20
    /// Granularity at which zero data is left out of the output (the file system's block size).
    static let zeroGranularity = 4096
    /// Granularity at which a copy against a base decides whether data differs.
    static let compareGranularity = 64 << 10

    public static func convert(from sourcePath: String, to destinationPath: String, options: Options,
                               progress: Progress? = nil) throws {
        let source = try VirtualDisk.open(sourcePath, options: .init(format: options.sourceFormat,
                                                                     allowParentMismatch: options.allowParentMismatch))
        try refuseSameFile(sourcePath, destinationPath)
        try removeExistingFile(destinationPath)
        let size = source.virtualSize
        if options.outputFormat == .raw {
            guard options.parentPath == nil else { throw VHDError.invalidArgument("a raw image cannot have a parent") }
            try copyToRaw(source, destinationPath, progress: progress)
            return
        }
        let base = try options.parentPath.map { try VirtualDisk.open($0) }
        if let base, base.virtualSize != size {
            throw VHDError.invalidArgument("the parent holds \(base.virtualSize) bytes but the source \(size)")
        }
        try DiskCreator.create(at: destinationPath, options: .init(
            format: options.outputFormat, type: base == nil ? options.outputType : .differencing,
            virtualSize: base == nil ? size : nil, blockSize: options.blockSize, parentPath: options.parentPath))
        do {
            let destination = try VirtualDisk.open(destinationPath, options: .init(writable: true))
            if let base {
                try copyDifferences(source, against: base, to: destination, progress: progress)
            } else {
                try copyAllocated(source, to: destination, progress: progress)
            }
            try destination.close()
        } catch {
            unlink(destinationPath)
            throw error
        }
    }

    /// Replaces a regular file; anything else (a device, a directory) is refused, never unlinked.
    private static func removeExistingFile(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw VHDError.invalidArgument("\(path) exists and is not a regular file")
        }
        guard unlink(path) == 0 else { throw VHDError.io(path: path, operation: "replace", errno: errno) }
    }

    private static func refuseSameFile(_ source: String, _ destination: String) throws {
        var a = stat(), b = stat()
        if stat(source, &a) == 0, stat(destination, &b) == 0, a.st_dev == b.st_dev, a.st_ino == b.st_ino {
            throw VHDError.invalidArgument("source and destination are the same file")
        }
    }

    /// Raw output: a sparse file the size of the disk, written only where the chain holds non-zero data.
    private static func copyToRaw(_ source: VirtualDisk, _ path: String, progress: Progress?) throws {
        let output = try ImageFile(path: path, writable: true, create: true)
        do {
            try output.truncate(to: source.virtualSize)
            try copyNonZeroData(source, progress: progress) { offset, run in try output.write(at: offset, from: run) }
            // No fsync, as qemu-img convert (cache=unsafe by default): the copy is reproducible from the source.
        } catch {
            unlink(path)
            throw error
        }
    }

    private static func copyAllocated(_ source: VirtualDisk, to destination: VirtualDisk, progress: Progress?) throws {
        try copyNonZeroData(source, progress: progress) { offset, run in try destination.write(at: offset, from: run) }
    }

    /// Reads the chain's data ranges a chunk at a time and hands on only the runs that are not zero.
    private static func copyNonZeroData(_ source: VirtualDisk, progress: Progress?,
                                        write: (UInt64, UnsafeRawBufferPointer) throws -> Void) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        try source.forEachDataRange(maximumLength: UInt64(chunkSize)) { offset, length in
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(length)])
            try source.read(at: offset, into: part)
            try ZeroTest.forEachNonZeroRun(in: UnsafeRawBufferPointer(part), granularity: zeroGranularity) { start, run in
                try write(offset + UInt64(start), run)
            }
            progress?(offset + length, source.virtualSize)
        }
        progress?(source.virtualSize, source.virtualSize)
    }

    /// Compares the source with the base piece by piece and writes the pieces that differ.
    private static func copyDifferences(_ source: VirtualDisk, against base: VirtualDisk, to destination: VirtualDisk,
                                        progress: Progress?) throws {
        let size = source.virtualSize
        let wanted = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        let existing = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer {
            wanted.deallocate()
            existing.deallocate()
        }
        var offset: UInt64 = 0
        while offset < size {
            let length = Int(min(UInt64(chunkSize), size - offset))
            try source.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: wanted[0..<length]))
            try base.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: existing[0..<length]))
            var piece = 0
            while piece < length {
                let count = min(compareGranularity, length - piece)
                if memcmp(wanted.baseAddress! + piece, existing.baseAddress! + piece, count) != 0 {
                    try destination.write(at: offset + UInt64(piece),
                                          from: UnsafeRawBufferPointer(rebasing: wanted[piece..<(piece + count)]))
                }
                piece += count
            }
            offset += UInt64(length)
            progress?(offset, size)
        }
    }
}
