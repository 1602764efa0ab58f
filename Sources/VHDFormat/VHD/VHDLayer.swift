import Foundation

/// A VHD file: fixed (raw data + footer) or sparse (dynamic/differencing: BAT of blocks, each a sector
/// bitmap followed by data).
final class VHDLayer: ImageLayer {
    var inPlaceWritesAllowed: Bool { file.writable }
    static let unallocated: UInt32 = 0xFFFF_FFFF

    let file: ImageFile
    private(set) var footer: VHDFooter
    let dynamicHeader: VHDDynamicHeader?
    private(set) var bat: [UInt32]
    let blockSize: UInt64
    let bitmapSize: UInt64
    let virtualSize: UInt64
    /// A differencing disk takes writes in 4 KiB units, so each bitmap byte is all-child or all-parent:
    /// libvhdi misreads a byte that mixes the two, and Hyper-V writes 4 KiB units too.
    var sectorSize: UInt64 { hasParent ? 4096 : 512 }
    let parentLink: ParentLink?
    /// Problems found while opening leniently (`strict: false`), for check and repair.
    private(set) var problems: [String] = []
    private(set) var badBATEntries = Set<Int>()

    private var nextBlockOffset: UInt64
    private var dirtyBATEntries = Set<Int>()
    private var cachedBitmap: (block: Int, bytes: [UInt8], allSet: Bool)?

    var isSparse: Bool { dynamicHeader != nil }
    var hasParent: Bool { footer.diskType == .differencing }

    init(file: ImageFile, strict: Bool = true) throws {
        self.file = file
        let path = file.path
        let math = CheckedImageMath(path: path)
        let fileSize = try file.size()
        guard fileSize >= UInt64(VHDFooter.size) else {
            throw VHDError.truncated(path: path, what: "VHD footer", needed: UInt64(VHDFooter.size), fileSize: fileSize)
        }
        var problems: [String] = []
        var footerLength = UInt64(VHDFooter.size)
        let tail = try file.read(at: fileSize - 512, count: 512, what: "VHD footer")
        var footer: VHDFooter
        do {
            if VHDFooter.hasCookie(tail) {
                footer = try VHDFooter(parsing: tail, path: path, where: "footer at end")
            } else {
                // Images made before Virtual PC 2004 end with a 511-byte footer.
                let old = Array(tail[1...])
                footerLength = 511
                footer = try VHDFooter(parsing: old, path: path, where: "footer at end")
            }
        } catch let error as VHDError {
            // A sparse image keeps a copy at offset 0 that can stand in for a damaged end footer.
            let head = try file.read(at: 0, count: 512, what: "VHD footer copy")
            guard VHDFooter.hasCookie(head), let copy = try? VHDFooter(parsing: head, path: path, where: "footer copy at 0"),
                  copy.diskType != .fixed else { throw error }
            problems.append("\(error.description); using the copy at offset 0")
            footer = copy
            // A damaged footer still occupies the end; new blocks go before it.
            footerLength = VHDFooter.hasCookie(tail) ? 512 : 0
        }
        self.footer = footer
        let dataEnd = fileSize - footerLength

        if footer.diskType == .fixed {
            dynamicHeader = nil
            bat = []
            blockSize = 0
            bitmapSize = 0
            virtualSize = footer.virtualSize
            parentLink = nil
            nextBlockOffset = dataEnd
            _ = try math.rangeInFile("fixed VHD data of \(virtualSize) bytes plus footer", offset: 0,
                                     length: try math.sum(virtualSize, footerLength, "fixed VHD size plus footer"), fileSize: fileSize)
            self.problems = problems
            return
        }

        let headerRange = try math.rangeInFile("VHD dynamic header at \(footer.dataOffset) (footer data offset)", offset: footer.dataOffset,
                                               length: UInt64(VHDDynamicHeader.size), fileSize: fileSize)
        let header = try VHDDynamicHeader(parsing: try file.read(at: footer.dataOffset, count: VHDDynamicHeader.size,
                                                                 what: "VHD dynamic header"), path: path)
        dynamicHeader = header
        // VHDDynamicHeader bounds the block size (a power of two, 512 B to 256 MiB).
        blockSize = UInt64(header.blockSize)
        bitmapSize = try math.alignedUp(blockSize / 512 / 8, to: 512, "VHD block bitmap size")
        virtualSize = footer.virtualSize
        let batBytes = try math.product(UInt64(header.maxTableEntries), 4, "VHD BAT length (max table entries)")
        let batRange = try math.rangeInFile("VHD BAT of \(header.maxTableEntries) entries at \(header.tableOffset)",
                                            offset: header.tableOffset, length: batBytes, fileSize: fileSize)
        guard try math.product(UInt64(header.maxTableEntries), blockSize, "VHD BAT coverage") >= virtualSize else {
            throw VHDError.corrupt(path: path, problem: "VHD BAT has \(header.maxTableEntries) entries of \(blockSize) bytes, too few for a disk of \(virtualSize) bytes")
        }
        let rawBAT = try file.read(at: header.tableOffset, count: try math.count(batBytes, atMost: CheckedImageMath.maximumTableBytes, "VHD BAT length"),
                                   what: "VHD BAT")
        bat = stride(from: 0, to: rawBAT.count, by: 4).map {
            UInt32(rawBAT[$0]) << 24 | UInt32(rawBAT[$0 + 1]) << 16 | UInt32(rawBAT[$0 + 2]) << 8 | UInt32(rawBAT[$0 + 3])
        }

        let checker = BlockPlacementChecker(
            reserved: [("footer copy", 0..<512), ("dynamic header", headerRange), ("BAT", batRange)],
            fileSize: dataEnd)
        let blockLength = bitmapSize + blockSize
        let placements = bat.enumerated().compactMap { index, entry -> BlockPlacementChecker.Placement? in
            entry == Self.unallocated ? nil : .init(index: index, start: UInt64(entry) * 512, length: blockLength)
        }
        var bad = BadTableEntries(tableName: "VHD BAT")
        checker.check(placements, tableName: "VHD BAT", into: &bad)
        if strict, let first = bad.first {
            throw VHDError.corrupt(path: path, problem: first)
        }
        problems += bad.allMessages.map { VHDError.corrupt(path: path, problem: $0).description }
        let badEntries = bad.indices
        badBATEntries = badEntries
        let lastBlockEnd = try placements.filter { !badEntries.contains($0.index) }
            .map { try math.sum($0.start, $0.length, "VHD BAT entry \($0.index) end") }.max() ?? 0
        nextBlockOffset = try math.alignedUp(max(dataEnd, lastBlockEnd, batRange.upperBound), to: 512, "VHD end of data")

        var link: ParentLink?
        if footer.diskType == .differencing {
            var locators: [ParentLocator] = []
            for locator in header.locators where locator.isUsed {
                let data: [UInt8]
                do {
                    _ = try math.rangeInFile("parent locator \(locator.code)", offset: locator.dataOffset,
                                             length: UInt64(locator.dataLength), fileSize: fileSize)
                    data = try file.read(at: locator.dataOffset, count: try math.count(UInt64(locator.dataLength), atMost: 65536,
                                                                                       "parent locator \(locator.code) length"),
                                         what: "parent locator")
                } catch let error as VHDError {
                    problems.append(error.description)
                    continue
                }
                switch locator.code {
                case "W2ku", "W2ru":
                    locators.append(ParentLocator(kind: locator.code, path: UTF16Text.decode(data, bigEndian: false)))
                case "Wi2k", "Wi2r":
                    locators.append(ParentLocator(kind: locator.code, path: String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)))
                case "MacX":
                    let url = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
                    let path = url.hasPrefix("file://") ? String(url.dropFirst(7)) : url
                    locators.append(ParentLocator(kind: locator.code, path: path.removingPercentEncoding ?? path))
                default:
                    continue
                }
            }
            link = ParentLink(identity: header.parentUniqueID.description, name: header.parentName,
                              timestamp: header.parentTimestamp, locators: locators)
        }
        parentLink = link
        self.problems = problems
    }

    var facts: DiskFacts {
        let type: DiskType = switch footer.diskType {
        case .fixed: .fixed
        case .dynamic: .dynamic
        case .differencing: .differencing
        }
        let version = "\(footer.creatorVersion >> 16).\(footer.creatorVersion & 0xFFFF)"
        let os = String(decoding: footer.creatorHostOS, as: UTF8.self).trimmingCharacters(in: .controlCharacters)
        return DiskFacts(
            path: file.path, format: .vhd, type: type, virtualSize: virtualSize,
            blockSize: blockSize, logicalSectorSize: 512, physicalSectorSize: 512,
            creator: "\(footer.creatorApplicationText.trimmingCharacters(in: .controlCharacters)) \(version) \(os)",
            identity: footer.uniqueID.description, fileWriteIdentifier: nil, diskIdentifier: nil,
            geometry: footer.geometry, fileSize: (try? file.size()) ?? 0, parent: parentLink, logReplayed: false)
    }

    func extent(at offset: UInt64, limit: UInt64) throws -> Extent {
        let length = min(limit, virtualSize - offset)
        guard isSparse else { return Extent(length: length, source: .data(fileOffset: offset)) }
        let block = Int(offset / blockSize)
        let inBlock = offset % blockSize
        let inBlockLimit = min(length, blockSize - inBlock)
        let absent: ExtentSource = hasParent ? .parent : .zero
        guard block < bat.count, bat[block] != Self.unallocated, !badBATEntries.contains(block) else {
            return Extent(length: inBlockLimit, source: absent)
        }
        let blockStart = UInt64(bat[block]) * 512
        let bitmap = try bitmap(of: block, at: blockStart)
        let dataOffset = blockStart + bitmapSize + inBlock
        if bitmap.allSet { return Extent(length: inBlockLimit, source: .data(fileOffset: dataOffset)) }
        // Follow the run of sectors whose bit matches the first one.
        var sector = Int(inBlock / 512)
        let present = Self.bit(bitmap.bytes, sector)
        let lastSector = Int((inBlock + inBlockLimit - 1) / 512)
        while sector < lastSector, Self.bit(bitmap.bytes, sector + 1) == present { sector += 1 }
        let runLength = min(UInt64(sector + 1) * 512 - inBlock, inBlockLimit)
        return Extent(length: runLength, source: present ? .data(fileOffset: dataOffset) : absent)
    }

    private static func bit(_ bitmap: [UInt8], _ sector: Int) -> Bool {
        bitmap[sector >> 3] & (0x80 >> UInt8(sector & 7)) != 0
    }

    private func bitmap(of block: Int, at blockStart: UInt64) throws -> (block: Int, bytes: [UInt8], allSet: Bool) {
        if let cached = cachedBitmap, cached.block == block { return cached }
        let bytes = try file.read(at: blockStart, count: Int(bitmapSize), what: "VHD block bitmap")
        let usedBytes = Int(blockSize / 512 / 8)
        let entry = (block, bytes, bytes.prefix(usedBytes).allSatisfy { $0 == 0xFF })
        cachedBitmap = entry
        return entry
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, lower: LowerReader) throws {
        guard isSparse else {
            try file.write(at: offset, from: buffer)
            return
        }
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let block = Int(position / blockSize)
            let inBlock = position % blockSize
            let count = Int(min(UInt64(buffer.count - done), blockSize - inBlock))
            let blockStart = try allocatedBlock(block)
            try file.write(at: blockStart + bitmapSize + inBlock,
                           from: UnsafeRawBufferPointer(rebasing: buffer[done..<(done + count)]))
            var bitmap = try self.bitmap(of: block, at: blockStart)
            if !bitmap.allSet {
                let first = Int(inBlock / 512), last = Int((inBlock + UInt64(count) - 1) / 512)
                for sector in first...last { bitmap.bytes[sector >> 3] |= 0x80 >> UInt8(sector & 7) }
                try file.write(at: blockStart, bytes: bitmap.bytes)
                cachedBitmap = (block, bitmap.bytes, bitmap.bytes.prefix(Int(blockSize / 4096)).allSatisfy { $0 == 0xFF })
            }
            done += count
        }
    }

    /// Appends a block where the footer was, then moves the footer after it. The BAT entry is written
    /// at flush, after the block is durable, so a crash leaks the block instead of exposing garbage.
    private func allocatedBlock(_ block: Int) throws -> UInt64 {
        guard block < bat.count else {
            throw VHDError.outOfRange(offset: UInt64(block) * blockSize, length: blockSize, size: virtualSize)
        }
        if bat[block] != Self.unallocated, !badBATEntries.contains(block) { return UInt64(bat[block]) * 512 }
        let blockStart = nextBlockOffset
        guard blockStart / 512 < UInt64(Self.unallocated) else {
            throw VHDError.unsupported(path: file.path, feature: "VHD larger than the BAT can address")
        }
        // A dynamic disk marks every sector present; a differencing one starts with all from the parent.
        let bitmap = [UInt8](repeating: hasParent ? 0 : 0xFF, count: Int(bitmapSize))
        try file.write(at: blockStart, bytes: bitmap)
        nextBlockOffset = blockStart + bitmapSize + blockSize
        try file.write(at: nextBlockOffset, bytes: footer.encoded())
        bat[block] = UInt32(blockStart / 512)
        badBATEntries.remove(block)
        dirtyBATEntries.insert(block)
        cachedBitmap = (block, bitmap, !hasParent)
        return blockStart
    }

    /// Unallocates BAT entries found bad, for `check --repair`.
    func dropBadEntries() -> Int {
        let count = badBATEntries.count
        for index in badBATEntries {
            bat[index] = Self.unallocated
            dirtyBATEntries.insert(index)
        }
        badBATEntries = []
        return count
    }

    /// Rewrites both footer copies from the good one, for `check --repair`.
    func rewriteFooters() throws {
        try file.write(at: nextBlockOffset, bytes: footer.encoded())
        try file.truncate(to: nextBlockOffset + 512)
        if isSparse { try file.write(at: 0, bytes: footer.encoded()) }
    }

    func flush() throws {
        guard file.writable else { return }
        try file.sync()
        guard let header = dynamicHeader, !dirtyBATEntries.isEmpty else { return }
        // Write whole 512-byte sectors of the table that hold changed entries.
        let sectors = Set(dirtyBATEntries.map { $0 / 128 })
        for sector in sectors.sorted() {
            let first = sector * 128, last = min(first + 128, bat.count)
            var bytes = [UInt8](repeating: 0, count: (last - first) * 4)
            for index in first..<last { bytes.putBigEndian(bat[index], at: (index - first) * 4) }
            try file.write(at: header.tableOffset + UInt64(first) * 4, bytes: bytes)
        }
        dirtyBATEntries.removeAll()
        try file.sync()
    }

    func close() throws { try flush() }
}
