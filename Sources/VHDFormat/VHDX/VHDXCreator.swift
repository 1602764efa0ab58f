import Foundation

/// Lays out new VHDX files as Hyper-V does: log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB, blocks after.
enum VHDXCreator {
    static let logOffset: UInt64 = 1 << 20
    static let logLength: UInt32 = 1 << 20
    static let metadataOffset: UInt64 = 2 << 20
    static let metadataLength: UInt32 = 1 << 20
    static let batOffset: UInt64 = 3 << 20

    static func create(file: ImageFile, options: DiskCreator.Options, size: UInt64, parent: DiskFacts?) throws {
        let logical = options.logicalSectorSize, physical = options.physicalSectorSize
        guard [512, 4096].contains(logical), [512, 4096].contains(physical) else {
            throw VHDError.invalidArgument("sector sizes must be 512 or 4096")
        }
        guard size % UInt64(logical) == 0, size <= VHDXMetadata.maximumVirtualSize else {
            throw VHDError.invalidArgument("a VHDX size must be a multiple of the \(logical)-byte sector, up to 64 TiB")
        }
        if let parent, parent.format != .vhdx {
            throw VHDError.invalidArgument("a VHDX's parent must be a VHDX, not \(parent.format.rawValue)")
        }
        let blockSize = options.blockSize ?? (options.type == .dynamic ? 32 << 20 : 2 << 20)
        guard blockSize >= 1 << 20, blockSize <= 256 << 20, blockSize.nonzeroBitCount == 1 else {
            throw VHDError.invalidArgument("VHDX block size must be a power of two from 1 MiB to 256 MiB")
        }
        let chunkRatio = Int((UInt64(1) << 23) * UInt64(logical) / blockSize)
        let dataBlocks = Int((size + blockSize - 1) / blockSize)
        let entryCount = parent != nil
            ? (dataBlocks + chunkRatio - 1) / chunkRatio * (chunkRatio + 1)
            : dataBlocks + (dataBlocks - 1) / chunkRatio
        let batLength = (UInt64(entryCount) * 8).roundedUp(toMultipleOf: 1 << 20)
        let dataStart = batOffset + batLength

        var locator: [(key: String, value: String)] = []
        if let parent {
            locator = [("parent_linkage", parent.identity),
                       ("relative_path", ParentResolver.relativePath(from: file.path, to: parent.path)),
                       ("absolute_win32_path", ParentResolver.windowsAbsolutePath(parent.path))]
        }
        let metadata = VHDXMetadata(blockSize: UInt32(blockSize), leaveBlocksAllocated: options.type == .fixed, hasParent: parent != nil, virtualSize: size,
                                    diskIdentifier: .random(), logicalSectorSize: logical, physicalSectorSize: physical,
                                    parentLocator: locator)

        var identifier = [UInt8](repeating: 0, count: 65536)
        identifier.putBytes(VHDXLayer.signature, at: 0)
        identifier.putBytes(UTF16Text.encode(DiskCreator.creatorName, bigEndian: false), at: 8)
        try file.write(at: 0, bytes: identifier)
        let fileWrite = GUID.random(), dataWrite = GUID.random()
        for (slot, offset) in VHDXHeader.offsets.enumerated() {
            let header = VHDXHeader(sequenceNumber: UInt64(slot + 1), fileWriteGuid: fileWrite, dataWriteGuid: dataWrite,
                                    logGuid: .zero, logLength: logLength, logOffset: logOffset)
            try file.write(at: offset, bytes: header.encoded())
        }
        let regions = VHDXRegionTable(entries: [
            .init(guid: VHDXRegionTable.batGuid, fileOffset: batOffset, length: UInt32(batLength), required: true),
            .init(guid: VHDXRegionTable.metadataGuid, fileOffset: metadataOffset, length: metadataLength, required: true),
        ])
        for offset in VHDXRegionTable.offsets { try file.write(at: offset, bytes: regions.encoded()) }
        try file.write(at: metadataOffset, bytes: metadata.encoded(regionLength: Int(metadataLength)))

        var bat = [UInt8](repeating: 0, count: Int(batLength))
        var fileEnd = dataStart
        if options.type == .fixed {
            for block in 0..<dataBlocks {
                let offset = dataStart + UInt64(block) * blockSize
                bat.putLittleEndian(offset | VHDXLayer.BlockState.fullyPresent.rawValue, at: (block + block / chunkRatio) * 8)
            }
            fileEnd = dataStart + UInt64(dataBlocks) * blockSize
        }
        if parent != nil {
            // Every chunk gets an all-zero sector bitmap ("all from the parent") up front: some readers
            // (libvhdi) consult the bitmap even for blocks that are not present.
            for chunk in 0..<(dataBlocks + chunkRatio - 1) / chunkRatio {
                let index = chunk * (chunkRatio + 1) + chunkRatio
                bat.putLittleEndian(fileEnd | VHDXLayer.BlockState.fullyPresent.rawValue, at: index * 8)
                fileEnd += VHDXLayer.mebibyte
            }
        }
        try file.write(at: batOffset, bytes: bat)
        try file.truncate(to: fileEnd)
    }
}
