import Foundation

/// A VHDX file: headers, region table, metadata and BAT; log replayed on open (in memory when the
/// file is opened read-only); metadata updates written through the log.
final class VHDXLayer: ImageLayer {
    enum BlockState: UInt64 {
        case notPresent = 0, undefined = 1, zero = 2, unmapped = 3, fullyPresent = 6, partiallyPresent = 7
    }

    static let mebibyte: UInt64 = 1 << 20
    static let signature = Array("vhdxfile".utf8)

    let file: ImageFile
    private(set) var header: VHDXHeader
    private var headerSlot: Int
    let metadata: VHDXMetadata
    let regions: VHDXRegionTable
    let creator: String
    private(set) var bat: [UInt64]
    let batOffset: UInt64
    let blockSize: UInt64
    let chunkRatio: Int
    let dataBlockCount: Int
    let virtualSize: UInt64
    let sectorSize: UInt64
    let logReplayed: Bool
    private(set) var problems: [String] = []
    private(set) var badBATEntries = Set<Int>()

    private var nextFreeOffset: UInt64
    private var dirtyBATPages = Set<Int>()
    /// Sector bitmap pages changed since the last flush, by file offset.
    private var pendingPages: [UInt64: [UInt8]] = [:]
    private var logWriter: VHDXLogWriter?
    var inPlaceWritesAllowed: Bool { logWriter != nil }
    private var cachedBitmap: (block: Int, bytes: [UInt8])?
    /// Test hook: stop metadata commits at this point, as a crash would.
    var crashPoint: VHDXLogWriter.CrashPoint?

    var hasParent: Bool { metadata.hasParent }

    /// A BAT entry's file offset: bits 20-63 count mebibytes.
    static func fileOffset(_ entry: UInt64) -> UInt64 { entry & ~(mebibyte - 1) }

    init(file: ImageFile, strict: Bool = true) throws {
        self.file = file
        let path = file.path
        var problems: [String] = []
        let identifier = try file.read(at: 0, count: 8 + 512, what: "VHDX file identifier")
        guard Array(identifier[0..<8]) == Self.signature else {
            throw VHDError.badSignature(path: path, what: "VHDX file identifier (expected 'vhdxfile')")
        }
        creator = UTF16Text.decode(Array(identifier[8...]), bigEndian: false)
        (header, headerSlot) = try VHDXHeader.readCurrent(from: file, problems: &problems)

        let math = CheckedImageMath(path: path)
        let physicalSize = try file.size()
        // The log lies inside the file even when empty: writes go through it, and blocks must not overlap it.
        let logRange = try math.rangeInFile("VHDX log (header log offset and length)", offset: header.logOffset,
                                            length: UInt64(header.logLength), fileSize: physicalSize)
        var replayed = false
        if !header.logGuid.isZero {
            guard header.logLength <= VHDXLogReplay.maximumLogLength else {
                throw VHDError.corrupt(path: path, problem: "VHDX log of \(header.logLength) bytes is larger than any writer makes (at most \(VHDXLogReplay.maximumLogLength))")
            }
            let log = try file.read(at: header.logOffset, count: try math.count(UInt64(header.logLength), atMost: physicalSize, "VHDX log length"),
                                    what: "VHDX log")
            let sequence = VHDXLogReplay.activeSequence(log: log, logGuid: header.logGuid)
            if let head = sequence.head {
                try Self.replay(sequence.entries, head: head, into: file, logRange: logRange, physicalSize: physicalSize)
                replayed = true
            }
            if file.writable {
                var cleared = header
                cleared.logGuid = .zero
                cleared.fileWriteGuid = .random()
                (header, headerSlot) = try Self.writeHeader(cleared, after: header, slot: headerSlot, to: file)
            }
        }
        logReplayed = replayed

        let fileSize = try file.size()
        regions = try VHDXRegionTable.read(from: file, problems: &problems)
        guard let batRegion = regions.entry(VHDXRegionTable.batGuid) else {
            throw VHDError.corrupt(path: path, problem: "VHDX region table has no BAT region")
        }
        guard let metadataRegion = regions.entry(VHDXRegionTable.metadataGuid) else {
            throw VHDError.corrupt(path: path, problem: "VHDX region table has no metadata region")
        }
        let batRange = try math.rangeInFile("VHDX BAT region at \(batRegion.fileOffset)", offset: batRegion.fileOffset,
                                            length: UInt64(batRegion.length), fileSize: fileSize)
        let metadataRange = try math.rangeInFile("VHDX metadata region at \(metadataRegion.fileOffset)", offset: metadataRegion.fileOffset,
                                                 length: UInt64(metadataRegion.length), fileSize: fileSize)
        guard metadataRegion.length <= 64 << 20 else {
            throw VHDError.corrupt(path: path, problem: "VHDX metadata region of \(metadataRegion.length) bytes is absurdly large")
        }
        metadata = try VHDXMetadata(parsing: try file.read(at: metadataRegion.fileOffset, count: try math.count(
            UInt64(metadataRegion.length), atMost: fileSize, "VHDX metadata region length"), what: "VHDX metadata region"), path: path)
        // VHDXMetadata bounds these (block size 1-256 MiB, sectors 512 or 4096, size up to 64 TiB), so the
        // derived counts below are small; they are still computed checked, as everything from the file is.
        blockSize = UInt64(metadata.blockSize)
        sectorSize = UInt64(metadata.logicalSectorSize)
        virtualSize = metadata.virtualSize
        chunkRatio = try math.count(try math.product(1 << 23, sectorSize, "VHDX chunk ratio") / blockSize,
                                    atMost: 1 << 23, "VHDX chunk ratio")
        dataBlockCount = try math.count(try math.alignedUp(virtualSize, to: blockSize, "VHDX virtual size") / blockSize,
                                        atMost: VHDXMetadata.maximumVirtualSize >> 20, "VHDX data block count")
        let chunkCount = (dataBlockCount + chunkRatio - 1) / chunkRatio
        let entryCount = metadata.hasParent ? chunkCount * (chunkRatio + 1) : dataBlockCount + (dataBlockCount - 1) / chunkRatio
        guard UInt64(entryCount) * 8 <= UInt64(batRegion.length) else {
            throw VHDError.corrupt(path: path, problem: "VHDX BAT region of \(batRegion.length) bytes cannot hold the \(entryCount) entries a \(virtualSize)-byte disk needs")
        }
        batOffset = batRegion.fileOffset
        let rawBAT = try file.read(at: batOffset, count: try math.count(UInt64(entryCount) * 8, atMost: CheckedImageMath.maximumTableBytes, "VHDX BAT length"),
                                   what: "VHDX BAT")
        bat = rawBAT.withUnsafeBytes { raw in
            (0..<entryCount).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        }

        // Every allocated payload and bitmap block must lie inside the file, clear of metadata and of each other.
        var placements: [BlockPlacementChecker.Placement] = []
        var bad = BadTableEntries(tableName: "VHDX BAT")
        for block in 0..<dataBlockCount {
            let index = block + block / chunkRatio
            let rawState = bat[index] & 7
            guard let state = BlockState(rawValue: rawState), state != .partiallyPresent || metadata.hasParent else {
                bad.add(index, "VHDX BAT entry \(index) has invalid payload state \(rawState)")
                continue
            }
            if state == .fullyPresent || state == .partiallyPresent {
                let blockStart = UInt64(block) * blockSize  // block < dataBlockCount: inside the disk
                let length = min(blockSize, try math.difference(virtualSize, blockStart, "VHDX last block length"))
                placements.append(.init(index: index, start: Self.fileOffset(bat[index]), length: length))
            }
            if state == .partiallyPresent {
                let bitmapIndex = (block / chunkRatio) * (chunkRatio + 1) + chunkRatio
                if bitmapIndex >= bat.count || bat[bitmapIndex] & 7 != 6 {
                    bad.add(index, "VHDX BAT entry \(index) is partially present but its sector bitmap block is not")
                }
            }
        }
        for chunk in stride(from: chunkRatio, to: bat.count, by: chunkRatio + 1) where bat[chunk] & 7 != 0 {
            if metadata.hasParent, bat[chunk] & 7 == 6 {
                placements.append(.init(index: chunk, start: Self.fileOffset(bat[chunk]), length: Self.mebibyte))
            } else if bat[chunk] & 7 != 6 || !metadata.hasParent {
                bad.add(chunk, "VHDX BAT entry \(chunk) has sector bitmap state \(bat[chunk] & 7) in a disk without a parent")
            }
        }
        let checker = BlockPlacementChecker(
            reserved: [("VHDX headers", 0..<Self.mebibyte), ("VHDX log", logRange),
                       ("VHDX metadata region", metadataRange), ("VHDX BAT region", batRange)],
            fileSize: fileSize)
        checker.check(placements, tableName: "VHDX BAT", into: &bad)
        // A partially present block reads its sectors through its chunk's bitmap block: a bad bitmap entry
        // makes the payload entry bad too.
        let badIndices = bad.indices
        if metadata.hasParent {
            for block in 0..<dataBlockCount where bat[block + block / chunkRatio] & 7 == BlockState.partiallyPresent.rawValue {
                let bitmapIndex = (block / chunkRatio) * (chunkRatio + 1) + chunkRatio
                let index = block + block / chunkRatio
                if badIndices.contains(bitmapIndex), !badIndices.contains(index) {
                    bad.add(index, "VHDX BAT entry \(index) is partially present but its sector bitmap entry \(bitmapIndex) is bad")
                }
            }
        }
        if strict, let first = bad.first {
            throw VHDError.corrupt(path: path, problem: first)
        }
        problems += bad.allMessages.map { VHDError.corrupt(path: path, problem: $0).description }
        let badEntries = bad.indices
        badBATEntries = badEntries
        // Only entries found good lie inside the file; the others may point anywhere.
        let lastEnd = try placements.filter { !badEntries.contains($0.index) }
            .map { try math.sum($0.start, $0.length, "VHDX BAT entry \($0.index) end") }.max() ?? 0
        nextFreeOffset = try math.alignedUp(max(fileSize, lastEnd, logRange.upperBound, batRange.upperBound, metadataRange.upperBound),
                                            to: Self.mebibyte, "VHDX end of file")
        self.problems = problems
    }

    /// Applies a log sequence to the file (read-write) or to an in-memory overlay (read-only).
    private static func replay(_ entries: [VHDXLogEntry], head: VHDXLogEntry, into file: ImageFile,
                               logRange: Range<UInt64>, physicalSize: UInt64) throws {
        let path = file.path
        guard head.flushedFileOffset <= physicalSize else {
            throw VHDError.corrupt(path: path, problem: "VHDX log says the file held \(head.flushedFileOffset) bytes but it has \(physicalSize)")
        }
        guard head.lastFileOffset <= VHDXMetadata.maximumVirtualSize * 2 else {
            throw VHDError.corrupt(path: path, problem: "VHDX log claims an absurd file size \(head.lastFileOffset)")
        }
        let limit = max(physicalSize, head.lastFileOffset)
        let math = CheckedImageMath(path: path)
        var overlay = LogOverlay()
        for entry in entries {
            for descriptor in entry.descriptors {
                let (offset, length): (UInt64, UInt64) = switch descriptor {
                case let .data(fileOffset, page): (fileOffset, UInt64(page.count))
                case let .zero(fileOffset, zeroLength): (fileOffset, zeroLength)
                }
                let target = try math.range("VHDX log entry \(entry.sequenceNumber) descriptor", offset: offset, length: length,
                                            within: limit, of: "file the log describes")
                guard offset >= VHDXLayer.mebibyte, !logRange.overlaps(target) else {
                    throw VHDError.corrupt(path: path, problem: "VHDX log entry \(entry.sequenceNumber) writes \(length) bytes at \(offset), outside the file's metadata and data")
                }
                switch descriptor {
                case let .data(fileOffset, page):
                    if file.writable { try file.write(at: fileOffset, bytes: page) } else { overlay.add(.data(offset: fileOffset, bytes: page)) }
                case let .zero(fileOffset, zeroLength):
                    if file.writable {
                        let zeros = [UInt8](repeating: 0, count: Int(min(zeroLength, 1 << 20)))
                        var done: UInt64 = 0
                        while done < zeroLength {
                            let count = min(UInt64(zeros.count), zeroLength - done)
                            try file.write(at: fileOffset + done, bytes: Array(zeros.prefix(Int(count))))
                            done += count
                        }
                    } else {
                        overlay.add(.zero(offset: fileOffset, length: zeroLength))
                    }
                }
            }
        }
        if file.writable {
            if physicalSize < head.lastFileOffset { try file.truncate(to: head.lastFileOffset) }
            try file.sync()
        } else {
            overlay.extend(to: head.lastFileOffset)
            file.setOverlay(overlay)
        }
    }

    /// Writes `new` (with the next sequence number) into the slot that is not current, and flushes.
    private static func writeHeader(_ new: VHDXHeader, after current: VHDXHeader, slot: Int,
                                    to file: ImageFile) throws -> (VHDXHeader, Int) {
        var next = new
        next.sequenceNumber = try CheckedImageMath(path: file.path).sum(current.sequenceNumber, 1, "VHDX header sequence number")
        let target = 1 - slot
        try file.write(at: VHDXHeader.offsets[target], bytes: next.encoded())
        try file.sync()
        return (next, target)
    }

    var facts: DiskFacts {
        var link: ParentLink?
        if metadata.hasParent {
            let kinds = ["relative_path", "volume_path", "absolute_win32_path"]
            link = ParentLink(identity: metadata.parentValue("parent_linkage") ?? "",
                              name: nil, timestamp: nil,
                              locators: metadata.parentLocator.filter { kinds.contains($0.key) }
                                  .map { ParentLocator(kind: $0.key, path: $0.value) })
        }
        return DiskFacts(
            path: file.path, format: .vhdx,
            type: metadata.hasParent ? .differencing : (isFixedLayout ? .fixed : .dynamic),
            virtualSize: virtualSize, blockSize: blockSize,
            logicalSectorSize: metadata.logicalSectorSize, physicalSectorSize: metadata.physicalSectorSize,
            creator: creator, identity: "{\(header.dataWriteGuid.mixedEndianString)}",
            fileWriteIdentifier: "{\(header.fileWriteGuid.mixedEndianString)}",
            diskIdentifier: "{\(metadata.diskIdentifier.mixedEndianString)}",
            geometry: nil, fileSize: (try? file.size()) ?? 0, parent: link, logReplayed: logReplayed)
    }

    /// VHDX has no type field: a fixed disk is one whose blocks stay allocated (LeaveBlockAllocated),
    /// or, as qemu makes them, one whose blocks are all present in file order.
    private var isFixedLayout: Bool {
        if metadata.leaveBlocksAllocated { return true }
        var expected: UInt64?
        for block in 0..<dataBlockCount {
            let entry = bat[payloadIndex(block)]
            // A bad entry (opened leniently, for check) may point anywhere: offset + blockSize could overflow.
            guard entry & 7 == 6, !badBATEntries.contains(payloadIndex(block)) else { return false }
            let offset = Self.fileOffset(entry)
            if let expected, offset != expected { return false }
            expected = offset + blockSize
        }
        return dataBlockCount > 1
    }

    private func payloadIndex(_ block: Int) -> Int { block + block / chunkRatio }

    func extent(at offset: UInt64, limit: UInt64) throws -> Extent {
        let length = min(limit, virtualSize - offset)
        let block = Int(offset / blockSize)
        let inBlock = offset % blockSize
        let inBlockLimit = min(length, blockSize - inBlock)
        let index = payloadIndex(block)
        let entry = bat[index]
        let absent: ExtentSource = hasParent ? .parent : .zero
        if badBATEntries.contains(index) { return Extent(length: inBlockLimit, source: absent) }
        switch BlockState(rawValue: entry & 7) {
        case .fullyPresent:
            return Extent(length: inBlockLimit, source: .data(fileOffset: Self.fileOffset(entry) + inBlock))
        case .partiallyPresent:
            let bitmap = try sectorBitmap(of: block)
            var sector = Int(inBlock / sectorSize)
            let present = bitmap[sector >> 3] & (1 << UInt8(sector & 7)) != 0
            let lastSector = Int((inBlock + inBlockLimit - 1) / sectorSize)
            while sector < lastSector, (bitmap[(sector + 1) >> 3] & (1 << UInt8((sector + 1) & 7)) != 0) == present {
                sector += 1
            }
            let run = min(UInt64(sector + 1) * sectorSize - inBlock, inBlockLimit)
            return Extent(length: run, source: present ? .data(fileOffset: Self.fileOffset(entry) + inBlock) : .parent)
        case .zero:
            return Extent(length: inBlockLimit, source: .zero)
        default:
            return Extent(length: inBlockLimit, source: absent)
        }
    }

    /// The part of the chunk's sector bitmap (LSB first, one bit per logical sector) covering `block`.
    private func sectorBitmap(of block: Int) throws -> [UInt8] {
        if let cached = cachedBitmap, cached.block == block { return cached.bytes }
        let chunk = block / chunkRatio
        let bitmapEntry = bat[chunk * (chunkRatio + 1) + chunkRatio]
        let sectorsPerBlock = Int(blockSize / sectorSize)
        let start = (block % chunkRatio) * sectorsPerBlock / 8
        let bitmapOffset = try CheckedImageMath(path: file.path).sum(Self.fileOffset(bitmapEntry), UInt64(start), "VHDX sector bitmap of block \(block)")
        let bytes = try readThroughPendingPages(at: bitmapOffset, count: sectorsPerBlock / 8)
        cachedBitmap = (block, bytes)
        return bytes
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, lower: LowerReader) throws {
        try startWriteSession()
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let block = Int(position / blockSize)
            let inBlock = position % blockSize
            let count = Int(min(UInt64(buffer.count - done), blockSize - inBlock))
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[done..<(done + count)])
            let whole = inBlock == 0 && UInt64(count) == blockLength(block)
            let state = BlockState(rawValue: bat[payloadIndex(block)] & 7)
            if hasParent, !whole, state != .fullyPresent, !badBATEntries.contains(payloadIndex(block)) {
                // A differencing disk keeps only the sectors written: the block is partially present and
                // the sector bitmap says which sectors are the child's.
                let blockStart = try partiallyPresentBlock(block)
                try file.write(at: blockStart + inBlock, from: chunk)
                try markSectorsPresent(block: block, from: inBlock, count: UInt64(count))
            } else {
                let blockStart = try presentBlock(block, fullyOverwritten: whole, lower: lower)
                try file.write(at: blockStart + inBlock, from: chunk)
            }
            done += count
        }
        if dirtyBATPages.count + pendingPages.count >= 64 { try flush() }
    }

    /// The file offset of a partially present block, allocated at the end of the file when absent.
    private func partiallyPresentBlock(_ block: Int) throws -> UInt64 {
        let index = payloadIndex(block)
        if bat[index] & 7 == BlockState.partiallyPresent.rawValue { return Self.fileOffset(bat[index]) }
        try ensureSectorBitmapBlock(chunk: block / chunkRatio)
        let target = try allocateAtEnd(blockSize)
        bat[index] = target | BlockState.partiallyPresent.rawValue
        dirtyBATPages.insert(index * 8 / 4096)
        if cachedBitmap?.block == block { cachedBitmap = nil }
        return target
    }

    /// Images from other writers may lack a chunk's bitmap block: add an all-zero one ("all parent").
    private func ensureSectorBitmapBlock(chunk: Int) throws {
        let index = chunk * (chunkRatio + 1) + chunkRatio
        guard bat[index] & 7 != 6 || badBATEntries.contains(index) else { return }
        bat[index] = try allocateAtEnd(Self.mebibyte) | 6
        badBATEntries.remove(index)
        dirtyBATPages.insert(index * 8 / 4096)
    }

    private func allocateAtEnd(_ length: UInt64) throws -> UInt64 {
        let target = nextFreeOffset
        nextFreeOffset += length
        if try file.size() < nextFreeOffset { try file.truncate(to: nextFreeOffset) }
        return target
    }

    /// Sets the bitmap bits of the written sectors, in pages that the next flush commits through the log.
    private func markSectorsPresent(block: Int, from inBlock: UInt64, count: UInt64) throws {
        let bitmapStart = Self.fileOffset(bat[(block / chunkRatio) * (chunkRatio + 1) + chunkRatio])
        let sectorsPerBlock = blockSize / sectorSize
        let firstBit = UInt64(block % chunkRatio) * sectorsPerBlock + inBlock / sectorSize
        let lastBit = UInt64(block % chunkRatio) * sectorsPerBlock + (inBlock + count - 1) / sectorSize
        for bit in firstBit...lastBit {
            let byteOffset = bitmapStart + bit / 8
            let pageOffset = byteOffset / 4096 * 4096
            if pendingPages[pageOffset] == nil {
                pendingPages[pageOffset] = try file.read(at: pageOffset, count: 4096, what: "VHDX sector bitmap")
            }
            pendingPages[pageOffset]?[Int(byteOffset - pageOffset)] |= 1 << UInt8(bit % 8)
        }
        if cachedBitmap?.block == block { cachedBitmap = nil }
    }

    /// File bytes as the next flush will leave them (bitmap pages not yet committed included).
    private func readThroughPendingPages(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = try file.read(at: offset, count: count, what: "VHDX sector bitmap")
        for (pageOffset, page) in pendingPages where pageOffset < offset + UInt64(count) && pageOffset + 4096 > offset {
            for index in 0..<count {
                let position = offset + UInt64(index)
                if position >= pageOffset, position < pageOffset + 4096 { bytes[index] = page[Int(position - pageOffset)] }
            }
        }
        return bytes
    }

    private func blockLength(_ block: Int) -> UInt64 { min(blockSize, virtualSize - UInt64(block) * blockSize) }

    /// Returns the file offset of a fully present block, allocating it at the end of the file (filled
    /// with what the disk showed there, so a partial write keeps the rest) when it is not.
    private func presentBlock(_ block: Int, fullyOverwritten: Bool, lower: LowerReader) throws -> UInt64 {
        let index = payloadIndex(block)
        let entry = bat[index]
        let state = badBATEntries.contains(index) ? nil : BlockState(rawValue: entry & 7)
        if state == .fullyPresent { return Self.fileOffset(entry) }
        let length = blockLength(block)
        let blockOffset = UInt64(block) * blockSize
        var target = nextFreeOffset
        if state == .partiallyPresent { target = Self.fileOffset(entry) }
        if !fullyOverwritten {
            // Materialize the block's current view so the untouched sectors keep their contents.
            var content = [UInt8](repeating: 0, count: Int(length))
            var needsWrite = false
            try content.withUnsafeMutableBytes { whole in
                var done: UInt64 = 0
                while done < length {
                    let extent = try self.extent(at: blockOffset + done, limit: length - done)
                    let part = UnsafeMutableRawBufferPointer(rebasing: whole[Int(done)..<Int(done + extent.length)])
                    switch extent.source {
                    case let .data(fileOffset):
                        try file.read(at: fileOffset, into: part, what: "VHDX block")
                        needsWrite = true
                    case .parent:
                        try lower(blockOffset + done, part)
                        needsWrite = true
                    case .zero:
                        break
                    }
                    done += extent.length
                }
            }
            if needsWrite { try file.write(at: target, bytes: content) }
        }
        if target == nextFreeOffset {
            nextFreeOffset += blockSize
            if try file.size() < nextFreeOffset { try file.truncate(to: nextFreeOffset) }
        }
        bat[index] = target | BlockState.fullyPresent.rawValue
        badBATEntries.remove(index)
        dirtyBATPages.insert(index * 8 / 4096)
        if cachedBitmap?.block == block { cachedBitmap = nil }
        return target
    }

    /// Before the first change: new FileWriteGuid and DataWriteGuid, and a fresh LogGuid for this session.
    private func startWriteSession() throws {
        guard logWriter == nil else { return }
        guard file.writable else { throw VHDError.readOnly(path: file.path) }
        var next = header
        next.fileWriteGuid = .random()
        next.dataWriteGuid = .random()
        next.logGuid = .random()
        (header, headerSlot) = try Self.writeHeader(next, after: header, slot: headerSlot, to: file)
        let writer = VHDXLogWriter(file: file, logOffset: header.logOffset, logLength: Int(header.logLength), logGuid: header.logGuid)
        writer.crashPoint = crashPoint
        logWriter = writer
    }

    /// Unallocates BAT entries found bad, for `check --repair`.
    func dropBadEntries() throws -> Int {
        guard !badBATEntries.isEmpty else { return 0 }
        try startWriteSession()
        let count = badBATEntries.count
        for index in badBATEntries {
            bat[index] = hasParent ? BlockState.notPresent.rawValue : BlockState.zero.rawValue
            if index % (chunkRatio + 1) == chunkRatio { bat[index] = 0 }
            dirtyBATPages.insert(index * 8 / 4096)
        }
        badBATEntries = []
        return count
    }

    /// Rewrites both region table copies and the non-current header from the current ones, for `check --repair`.
    func repairRedundantCopies() throws {
        try startWriteSession()
        for offset in VHDXRegionTable.offsets { try file.write(at: offset, bytes: regions.encoded()) }
        try file.sync()
    }

    func flush() throws {
        guard file.writable, let logWriter else { return }
        guard !dirtyBATPages.isEmpty || !pendingPages.isEmpty else {
            try file.sync()
            return
        }
        // Blocks must be durable before the BAT that points at them.
        try file.sync()
        let entriesPerPage = 4096 / 8
        let pages = dirtyBATPages.sorted().map { page -> (fileOffset: UInt64, page: [UInt8]) in
            var bytes = [UInt8](repeating: 0, count: 4096)
            let first = page * entriesPerPage
            for index in first..<min(first + entriesPerPage, bat.count) {
                bytes.putLittleEndian(bat[index], at: (index - first) * 8)
            }
            return (batOffset + UInt64(page) * 4096, bytes)
        }
        let bitmapPages = pendingPages.sorted { $0.key < $1.key }.map { (fileOffset: $0.key, page: $0.value) }
        try logWriter.commit(pages: bitmapPages + pages)
        dirtyBATPages.removeAll()
        pendingPages.removeAll()
    }

    func close() throws {
        try flush()
        guard logWriter != nil else { return }
        var cleared = header
        cleared.logGuid = .zero
        (header, headerSlot) = try Self.writeHeader(cleared, after: header, slot: headerSlot, to: file)
        logWriter = nil
    }
}
