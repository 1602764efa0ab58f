import Foundation
import Testing
@testable import VHDFormat

/// Every offset, length and count field of real images (made by qemu-img and by vhdtool) set, one at a
/// time, to 0, to its maximum and to just past the file's end. Checksummed structures are re-encoded so
/// the damage reaches the arithmetic instead of stopping at a checksum. Each damaged image gives a
/// VHDError (never a trap, never another error), and damage that must be detected is.
@Suite struct FieldDamageTests {
    enum Maker: String, CaseIterable, Sendable {
        case vhdtoolVHD, qemuVHD, qemuFixedVHD, vhdtoolDifferencingVHD, vhdtoolVHDX, qemuVHDX, vhdtoolDifferencingVHDX
    }

    enum Expectation {
        /// Opening and reading the disk throws a VHDError, and check does not call the image clean.
        case refused
        /// Opening throws a VHDError or check reports a problem.
        case detected
        /// Harmless to the reader (a zero size, an unused locator): works or a VHDError.
        case survives
        /// Reads work, but the first write throws a VHDError (the next header sequence number would wrap).
        case refusedOnWrite
    }

    struct Damage {
        var field: String
        var label: String
        var expectation: Expectation
        var apply: (String) throws -> Void
    }

    /// The image under test, with data in a few blocks (differencing: the child, next to its parent).
    static func make(_ maker: Maker, in directory: TestDirectory) throws -> String {
        switch maker {
        case .vhdtoolVHD: return try BadInputTests.sample(.vhd, in: directory)
        case .vhdtoolVHDX: return try BadInputTests.sample(.vhdx, in: directory)
        case .qemuVHD, .qemuFixedVHD, .qemuVHDX:
            let format: ImageFormat = maker == .qemuVHDX ? .vhdx : .vhd
            let image = directory.file("qemu.\(format.rawValue)")
            let options = switch maker {
            case .qemuVHD: "subformat=dynamic"
            case .qemuFixedVHD: "subformat=fixed"
            default: "subformat=dynamic,block_size=1M"
            }
            try ProcessRunner.check("qemu-img", ["create", "-q", "-f", Qemu.formatName(format), "-o", options, image, "8M"])
            try ProcessRunner.check("qemu-io", ["-f", Qemu.formatName(format), "-c", "write -P 0x5a 0 64k",
                                                "-c", "write -P 0x6b 3M 64k", image])
            return image
        case .vhdtoolDifferencingVHD, .vhdtoolDifferencingVHDX:
            let format: ImageFormat = maker == .vhdtoolDifferencingVHD ? .vhd : .vhdx
            let parent = try BadInputTests.sample(format, in: directory, name: "parent")
            let child = directory.file("child.\(format.rawValue)")
            try DiskCreator.create(at: child, options: .init(format: format, type: .differencing, parentPath: parent))
            let disk = try VirtualDisk.open(child, options: .init(writable: true))
            try disk.write(at: 4096, bytes: [UInt8](repeating: 0x77, count: 8192))
            try disk.write(at: 5 << 20, bytes: [UInt8](repeating: 0x78, count: 4096))
            try disk.close()
            return child
        }
    }

    static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * (MemoryLayout<T>.size - 1 - $0))) }
    }

    static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    static func aligned(_ value: UInt64, _ alignment: UInt64) -> UInt64 { (value + alignment - 1) / alignment * alignment }

    // MARK: VHD

    static func vhdDamages(_ image: String) throws -> [Damage] {
        let layer = try VHDLayer(file: ImageFile(path: image, writable: false))
        let fileSize = try layer.file.size()
        var damages: [Damage] = []
        func footer(_ field: String, _ values: [(String, UInt64, Expectation)], _ set: @escaping (inout VHDFooter, UInt64) -> Void) {
            for (label, value, expectation) in values {
                damages.append(Damage(field: "VHD footer \(field)", label: label, expectation: expectation) { path in
                    var footer = layer.footer
                    set(&footer, value)
                    let file = try ImageFile(path: path, writable: true)
                    try file.write(at: fileSize - 512, bytes: footer.encoded())
                    if layer.isSparse { try file.write(at: 0, bytes: footer.encoded()) }
                })
            }
        }
        footer("current size", [("0", 0, .survives), ("max", .max, .refused),
                                ("past the end", layer.isSparse ? UInt64(layer.dynamicHeader!.maxTableEntries) * layer.blockSize + 512 : fileSize - 511, .refused)]) {
            $0.currentSize = $1
        }
        guard let header = layer.dynamicHeader else { return damages }
        footer("data offset", [("0", 0, .refused), ("max", .max, .refused), ("past the end", fileSize - 512, .refused)]) { $0.dataOffset = $1 }

        func dynamicHeader(_ field: String, _ values: [(String, UInt64, Expectation)], _ set: @escaping (inout VHDDynamicHeader, UInt64) -> Void) {
            for (label, value, expectation) in values {
                damages.append(Damage(field: "VHD dynamic header \(field)", label: label, expectation: expectation) { path in
                    var changed = header
                    set(&changed, value)
                    try ImageFile(path: path, writable: true).write(at: layer.footer.dataOffset, bytes: changed.encoded())
                })
            }
        }
        dynamicHeader("table offset", [("0", 0, .refused), ("max", .max, .refused), ("past the end", fileSize, .refused)]) { $0.tableOffset = $1 }
        dynamicHeader("max table entries", [("0", 0, .refused), ("max", UInt64(UInt32.max), .refused),
                                            ("past the end", (fileSize - header.tableOffset) / 4 + 1, .refused)]) {
            $0.maxTableEntries = UInt32($1)
        }
        dynamicHeader("block size", [("0", 0, .refused), ("max", UInt64(UInt32.max), .refused),
                                     ("blocks past the end", 256 << 20, .refused)]) { $0.blockSize = UInt32($1) }
        for (index, locator) in header.locators.enumerated() where locator.isUsed {
            // A damaged locator leaves the others (and the parent's name) to find the parent: check reports it.
            dynamicHeader("locator \(index) data offset", [("0", 0, .survives), ("max", .max, .detected),
                                                          ("past the end", fileSize, .detected)]) { $0.locators[index].dataOffset = $1 }
            dynamicHeader("locator \(index) data length", [("0", 0, .survives), ("max", UInt64(UInt32.max), .detected),
                                                          ("past the end", fileSize - locator.dataOffset + 1, .detected)]) {
                $0.locators[index].dataLength = UInt32($1)
            }
        }
        if let entry = layer.bat.firstIndex(where: { $0 != VHDLayer.unallocated }) {
            for (label, value, expectation) in [("0", UInt32(0), Expectation.refused), ("max (unallocated)", .max, .survives),
                                                ("past the end", UInt32(fileSize / 512), .refused)] {
                damages.append(Damage(field: "VHD BAT entry \(entry)", label: label, expectation: expectation) { path in
                    try ImageFile(path: path, writable: true).write(at: header.tableOffset + UInt64(entry) * 4, bytes: bigEndian(value))
                })
            }
        }
        return damages
    }

    // MARK: VHDX

    static func vhdxDamages(_ image: String) throws -> [Damage] {
        let layer = try VHDXLayer(file: ImageFile(path: image, writable: false))
        let fileSize = try layer.file.size()
        let mebibyte: UInt64 = 1 << 20
        let maximumAligned = UInt64.max & ~(mebibyte - 1)
        let maximumAligned32 = UInt64(UInt32.max) & ~(mebibyte - 1)
        var damages: [Damage] = []

        var headers: [VHDXHeader] = []
        for offset in VHDXHeader.offsets {
            headers.append(try VHDXHeader(parsing: try layer.file.read(at: offset, count: VHDXHeader.size, what: "test"), path: image, which: "test"))
        }
        func header(_ field: String, _ values: [(String, UInt64, Expectation)], _ set: @escaping (inout VHDXHeader, UInt64) -> Void) {
            for (label, value, expectation) in values {
                damages.append(Damage(field: "VHDX headers' \(field)", label: label, expectation: expectation) { path in
                    let file = try ImageFile(path: path, writable: true)
                    for (slot, offset) in VHDXHeader.offsets.enumerated() {
                        var changed = headers[slot]
                        set(&changed, value)
                        try file.write(at: offset, bytes: changed.encoded())
                    }
                })
            }
        }
        let log = layer.header
        header("log offset", [("0", 0, .refused), ("max", maximumAligned, .refused),
                              ("past the end", aligned(fileSize, mebibyte), .refused)]) { $0.logOffset = $1 }
        header("log length", [("0", 0, .survives), ("max", maximumAligned32, .refused),
                              ("past the end", aligned(fileSize - log.logOffset, mebibyte) + mebibyte, .refused)]) { $0.logLength = UInt32($1) }
        header("sequence number", [("max", .max, .refusedOnWrite)]) { $0.sequenceNumber = $1 }

        func region(_ name: String, _ guid: GUID, _ values: (offset: [(String, UInt64, Expectation)], length: [(String, UInt64, Expectation)])) {
            for (field, list) in [("file offset", values.offset), ("length", values.length)] {
                for (label, value, expectation) in list {
                    damages.append(Damage(field: "VHDX region table \(name) \(field)", label: label, expectation: expectation) { path in
                        var table = layer.regions
                        table.entries = table.entries.map { entry in
                            guard entry.guid == guid else { return entry }
                            var changed = entry
                            if field == "length" { changed.length = UInt32(value) } else { changed.fileOffset = value }
                            return changed
                        }
                        let file = try ImageFile(path: path, writable: true)
                        for offset in VHDXRegionTable.offsets { try file.write(at: offset, bytes: table.encoded()) }
                    })
                }
            }
        }
        let metadataRegion = try #require(layer.regions.entry(VHDXRegionTable.metadataGuid))
        for (name, guid) in [("BAT", VHDXRegionTable.batGuid), ("metadata", VHDXRegionTable.metadataGuid)] {
            let entry = try #require(layer.regions.entry(guid))
            region(name, guid, (
                offset: [("0", 0, .refused), ("max", maximumAligned, .refused), ("past the end", aligned(fileSize, mebibyte), .refused)],
                length: [("0", 0, .refused), ("max", maximumAligned32, .refused),
                         ("past the end", aligned(fileSize - entry.fileOffset, mebibyte) + mebibyte, .refused)]))
        }

        // The metadata region has no checksum: its table and items are patched in place.
        let metadataStart = metadataRegion.fileOffset
        let table = try layer.file.read(at: metadataStart, count: 65536, what: "test")
        func patch(_ field: String, at offset: UInt64, _ values: [(String, [UInt8], Expectation)]) {
            for (label, bytes, expectation) in values {
                damages.append(Damage(field: field, label: label, expectation: expectation) { path in
                    try ImageFile(path: path, writable: true).write(at: offset, bytes: bytes)
                })
            }
        }
        patch("VHDX metadata entry count", at: metadataStart + 10, [("0", littleEndian(UInt16(0)), .refused), ("max", littleEndian(UInt16.max), .refused)])
        let count = Int(try table.littleEndian(UInt16.self, at: 10))
        var items: [GUID: (entry: Int, offset: UInt64)] = [:]
        for index in 0..<count {
            let base = 32 + index * 32
            items[GUID(bytes: Array(table[base..<base + 16]))] = (index, UInt64(try table.littleEndian(UInt32.self, at: base + 16)))
        }
        let regionLength = UInt64(metadataRegion.length)
        for (name, guid) in [("file parameters", VHDXMetadata.fileParametersGuid), ("virtual disk size", VHDXMetadata.virtualDiskSizeGuid),
                             ("logical sector size", VHDXMetadata.logicalSectorSizeGuid), ("parent locator", VHDXMetadata.parentLocatorGuid)] {
            guard let item = items[guid] else { continue }
            let base = metadataStart + 32 + UInt64(item.entry) * 32
            patch("VHDX metadata \(name) item offset", at: base + 16, [("0", littleEndian(UInt32(0)), .refused),
                                                                        ("max", littleEndian(UInt32.max), .refused),
                                                                        ("past the end", littleEndian(UInt32(regionLength)), .refused)])
            patch("VHDX metadata \(name) item length", at: base + 20, [("0", littleEndian(UInt32(0)), .refused),
                                                                        ("max", littleEndian(UInt32.max), .refused),
                                                                        ("past the end", littleEndian(UInt32(regionLength - item.offset + 1)), .refused)])
        }
        if let size = items[VHDXMetadata.virtualDiskSizeGuid] {
            patch("VHDX virtual disk size", at: metadataStart + size.offset, [
                ("0", littleEndian(UInt64(0)), .refused), ("max", littleEndian(UInt64.max), .refused),
                ("past what the BAT holds", littleEndian(VHDXMetadata.maximumVirtualSize), .refused)])
        }
        if let parameters = items[VHDXMetadata.fileParametersGuid] {
            patch("VHDX block size", at: metadataStart + parameters.offset, [
                ("0", littleEndian(UInt32(0)), .refused), ("max", littleEndian(UInt32.max), .refused),
                ("past the end", littleEndian(UInt32(512 << 20)), .refused)])
        }
        if let sector = items[VHDXMetadata.logicalSectorSizeGuid] {
            patch("VHDX logical sector size", at: metadataStart + sector.offset, [
                ("0", littleEndian(UInt32(0)), .refused), ("max", littleEndian(UInt32.max), .refused)])
        }
        if let locator = items[VHDXMetadata.parentLocatorGuid] {
            let start = metadataStart + locator.offset
            let length = UInt64(try table.littleEndian(UInt32.self, at: 32 + locator.entry * 32 + 20))
            patch("VHDX parent locator pair count", at: start + 18, [("max", littleEndian(UInt16.max), .refused)])
            for (index, key) in layer.metadata.parentLocator.enumerated() {
                let base = start + 20 + UInt64(index) * 12
                // Without parent_linkage the parent no longer matches; without a path locator the others find it.
                let lost: Expectation = key.key == "parent_linkage" ? .refused : .survives
                patch("VHDX parent locator pair \(index) key offset", at: base, [
                    ("0", littleEndian(UInt32(0)), lost), ("max", littleEndian(UInt32.max), .refused),
                    ("past the end", littleEndian(UInt32(length)), .refused)])
                patch("VHDX parent locator pair \(index) value length", at: base + 10, [
                    ("0", littleEndian(UInt16(0)), lost), ("max", littleEndian(UInt16.max), .refused)])
            }
        }

        // BAT: a present payload block, and (differencing) a sector bitmap block.
        let chunk = layer.chunkRatio
        var entries: [(String, Int)] = []
        if let block = (0..<layer.dataBlockCount).first(where: { layer.bat[$0 + $0 / chunk] & 7 >= 6 }) {
            entries.append(("payload", block + block / chunk))
        }
        if layer.hasParent, let bitmap = stride(from: chunk, to: layer.bat.count, by: chunk + 1).first(where: { layer.bat[$0] & 7 == 6 }) {
            entries.append(("sector bitmap", bitmap))
        }
        for (kind, index) in entries {
            let state = layer.bat[index] & 7
            patch("VHDX BAT \(kind) entry \(index)", at: layer.batOffset + UInt64(index) * 8, [
                ("0", littleEndian(state), .refused), ("max", littleEndian(maximumAligned | state), .refused),
                ("past the end", littleEndian(aligned(fileSize, mebibyte) | state), .refused)])
        }
        return damages
    }

    // MARK: The test

    /// check's verdict: false when it throws a VHDError or reports problems.
    static func checkSaysClean(_ path: String) -> Bool {
        do {
            return try DiskChecker.check(path).isClean
        } catch is VHDError {
            return false
        } catch {
            Issue.record("check: not a VHDError: \(error)")
            return false
        }
    }

    @Test(arguments: Maker.allCases)
    func everyCheckedFieldDamagedGivesAVHDError(_ maker: Maker) throws {
        let directory = try TestDirectory()
        let image = try Self.make(maker, in: directory)
        #expect(BadInputTests.openError(image) == nil, "the undamaged image must open")
        let damages = maker == .qemuVHD || maker == .qemuFixedVHD || maker == .vhdtoolVHD || maker == .vhdtoolDifferencingVHD
            ? try Self.vhdDamages(image) : try Self.vhdxDamages(image)
        #expect(damages.count >= (maker == .qemuFixedVHD ? 3 : 15), "\(damages.count) damages")
        let copy = directory.file("damaged." + (image as NSString).pathExtension)
        for damage in damages {
            let name = "\(damage.field) = \(damage.label)"
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: image, toPath: copy)
            try damage.apply(copy)
            let error = BadInputTests.openError(copy)
            switch damage.expectation {
            case .refused:
                #expect(error != nil, "\(name): opened")
                #expect(!Self.checkSaysClean(copy), "\(name): check calls it clean")
            case .detected:
                #expect(error != nil || !Self.checkSaysClean(copy), "\(name): neither refused nor reported")
            case .survives:
                _ = Self.checkSaysClean(copy)
            case .refusedOnWrite:
                #expect(error == nil, "\(name): \(String(describing: error))")
                #expect(throws: VHDError.self, "\(name): written") {
                    let disk = try VirtualDisk.open(copy, options: .init(writable: true))
                    try disk.write(at: 0, bytes: [UInt8](repeating: 1, count: 4096))
                    try disk.close()
                }
            }
            if let error { #expect(error.description.contains(copy) || error.description.contains(directory.path), "\(name): \(error) names no image") }
        }
    }
}
