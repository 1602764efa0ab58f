import Foundation

/// Creates empty fixed, dynamic and differencing images in either format.
public enum DiskCreator {
    public struct Options: Sendable {
        public var format: ImageFormat
        public var type: DiskType
        /// Required unless differencing (a child takes its parent's size).
        public var virtualSize: UInt64?
        /// nil: the Hyper-V default (VHD 2 MiB; VHDX 32 MiB dynamic, 2 MiB fixed and differencing).
        public var blockSize: UInt64?
        public var parentPath: String?
        public var logicalSectorSize: UInt32
        public var physicalSectorSize: UInt32

        public init(format: ImageFormat, type: DiskType, virtualSize: UInt64? = nil, blockSize: UInt64? = nil,
                    parentPath: String? = nil, logicalSectorSize: UInt32 = 512, physicalSectorSize: UInt32 = 4096) {
            self.format = format
            self.type = type
            self.virtualSize = virtualSize
            self.blockSize = blockSize
            self.parentPath = parentPath
            self.logicalSectorSize = logicalSectorSize
            self.physicalSectorSize = physicalSectorSize
        }
    }

    static let creatorName = "vhdtool (CSVFS)"

    @discardableResult
    public static func create(at path: String, options: Options) throws -> DiskFacts {
        var parentFacts: DiskFacts?
        if options.type == .differencing {
            guard let parentPath = options.parentPath else {
                throw VHDError.invalidArgument("a differencing image needs a parent")
            }
            let parent = try VirtualDisk.open(parentPath)
            parentFacts = parent.facts
        } else if options.parentPath != nil {
            throw VHDError.invalidArgument("only a differencing image has a parent")
        }
        guard let size = options.virtualSize ?? parentFacts?.virtualSize, size > 0 else {
            throw VHDError.invalidArgument("a virtual size is needed")
        }
        if let parentFacts, let requested = options.virtualSize, requested != parentFacts.virtualSize {
            throw VHDError.invalidArgument("a differencing image has its parent's size (\(parentFacts.virtualSize) bytes)")
        }
        let file = try ImageFile(path: path, writable: true, create: true)
        do {
            switch options.format {
            case .vhd: try VHDCreator.create(file: file, options: options, size: size, parent: parentFacts)
            case .vhdx: try VHDXCreator.create(file: file, options: options, size: size, parent: parentFacts)
            case .raw:
                guard options.type == .fixed else { throw VHDError.invalidArgument("a raw image is always fixed") }
                try file.truncate(to: size)
            }
            try file.sync()
            return try FormatDetector.openLayer(ImageFile(path: path, writable: false), format: options.format).facts
        } catch {
            unlink(path)
            throw error
        }
    }
}
