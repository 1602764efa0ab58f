import Foundation

/// Lays out new VHD files: fixed (zeros + footer) or sparse (footer copy, dynamic header, BAT, parent
/// locators, footer).
enum VHDCreator {
    static let creatorApplication = Array("vhdt".utf8)
    static let maximumSize: UInt64 = 2040 << 30

    /// VHD timestamps count seconds from 2000-01-01 00:00 UTC.
    static func timestamp(_ date: Date) -> UInt32 {
        UInt32(clamping: max(0, Int64(date.timeIntervalSince1970) - 946_684_800))
    }

    static func create(file: ImageFile, options: DiskCreator.Options, size requested: UInt64, parent: DiskFacts?) throws {
        guard requested <= maximumSize else {
            throw VHDError.invalidArgument("a VHD holds at most 2040 GiB; \(requested) bytes asked")
        }
        let size = requested.roundedUp(toMultipleOf: 512)
        if let parent, parent.format != .vhd {
            throw VHDError.invalidArgument("a VHD's parent must be a VHD, not \(parent.format.rawValue)")
        }
        let typeCode: VHDFooter.DiskTypeCode = switch options.type {
        case .fixed: .fixed
        case .dynamic: .dynamic
        case .differencing: .differencing
        }
        var footer = VHDFooter(dataOffset: options.type == .fixed ? UInt64.max : 512, timestamp: timestamp(Date()),
                               creatorApplication: creatorApplication, creatorVersion: 0x0001_0000,
                               creatorHostOS: Array("Wi2k".utf8), size: size,
                               geometry: VHDGeometry.forExactSize(size), diskType: typeCode, uniqueID: .random())
        if options.type == .fixed {
            try file.truncate(to: size)
            try file.write(at: size, bytes: footer.encoded())
            return
        }
        let blockSize = options.blockSize ?? (2 << 20)
        guard blockSize >= 512 * 8, blockSize <= 256 << 20, blockSize.nonzeroBitCount == 1 else {
            throw VHDError.invalidArgument("VHD block size must be a power of two from 4 KiB to 256 MiB")
        }
        let entries = (size + blockSize - 1) / blockSize
        let tableOffset: UInt64 = 512 + 1024
        let tableBytes = (entries * 4).roundedUp(toMultipleOf: 512)
        var header = VHDDynamicHeader(tableOffset: tableOffset, maxTableEntries: UInt32(entries), blockSize: UInt32(blockSize))
        var next = tableOffset + tableBytes
        var locatorData: [(UInt64, [UInt8])] = []
        if let parent {
            header.parentUniqueID = uuid(parent.identity)
            let parentPath = parent.path
            header.parentName = (parentPath as NSString).lastPathComponent
            let attributes = try? FileManager.default.attributesOfItem(atPath: parentPath)
            header.parentTimestamp = timestamp((attributes?[.modificationDate] as? Date) ?? Date())
            let values: [(String, String)] = [
                ("W2ru", ParentResolver.relativePath(from: file.path, to: parentPath)),
                ("W2ku", ParentResolver.windowsAbsolutePath(parentPath)),
            ]
            for (index, (code, path)) in values.enumerated() {
                let data = UTF16Text.encode(path, bigEndian: false)
                let space = UInt64(data.count).roundedUp(toMultipleOf: 512)
                header.locators[index] = .init(platformCode: Array(code.utf8), dataSpace: UInt32(space),
                                               dataLength: UInt32(data.count), dataOffset: next)
                locatorData.append((next, data))
                next += space
            }
        }
        try file.write(at: 0, bytes: footer.encoded())
        try file.write(at: 512, bytes: header.encoded())
        try file.write(at: tableOffset, bytes: [UInt8](repeating: 0xFF, count: Int(tableBytes)))
        for (offset, data) in locatorData { try file.write(at: offset, bytes: data) }
        footer.dataOffset = 512
        try file.write(at: next, bytes: footer.encoded())
    }

    /// A VHD unique id from its printed RFC form.
    private static func uuid(_ text: String) -> GUID {
        guard let uuid = UUID(uuidString: text) else { return .zero }
        let u = uuid.uuid
        return GUID(bytes: [u.0, u.1, u.2, u.3, u.4, u.5, u.6, u.7, u.8, u.9, u.10, u.11, u.12, u.13, u.14, u.15])
    }
}
