import ArgumentParser
import VHDFormat

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a fixed, dynamic or differencing image.")

    @Option(name: .short, help: "vhd or vhdx.") var format: ImageFormat = .vhdx
    @Flag(help: "Fixed (preallocated layout) instead of dynamic.") var fixed = false
    @Option(name: [.customShort("b"), .customLong("parent")], help: "Make a differencing image of this parent.") var parent: String?
    @Option(help: "Block size (e.g. 2M); default as Hyper-V.") var blockSize: SizeArgument?
    @Option(help: "VHDX logical sector size, 512 or 4096.") var logicalSectorSize: UInt32 = 512
    @Option(help: "VHDX physical sector size, 512 or 4096.") var physicalSectorSize: UInt32 = 4096
    @Argument(help: "The new image file.") var file: String
    @Argument(help: "Virtual size (e.g. 10G); a differencing image takes its parent's.") var size: SizeArgument?

    func run() throws {
        guard format != .raw || parent == nil else { throw ValidationError("a raw image has no parent") }
        let type: DiskType = parent != nil ? .differencing : (fixed || format == .raw ? .fixed : .dynamic)
        let facts = try reportingErrors {
            try DiskCreator.create(at: file, options: .init(
                format: format, type: type, virtualSize: size?.bytes, blockSize: blockSize?.bytes, parentPath: parent,
                logicalSectorSize: logicalSectorSize, physicalSectorSize: physicalSectorSize))
        }
        print("Formatting '\(file)', fmt=\(format.rawValue) type=\(facts.type.rawValue) size=\(facts.virtualSize)"
              + (facts.blockSize > 0 ? " block_size=\(facts.blockSize)" : "") + (parent.map { " parent=\($0)" } ?? ""))
    }
}
