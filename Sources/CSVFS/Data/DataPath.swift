import CSVFSSystem
import Glibc

/// File data between FUSE and the LUN: reads and writes go straight to the extents' LUN offsets, with
/// O_DIRECT for whole blocks. The metadata service is asked only where the map changes.
public final class DataPath: Sendable {
    private let service: any MetadataService
    private let device: LUNDevice
    private let locks = InodeLocks()
    private let pool = AlignedBufferPool(bufferSize: (1 << 20) + 8192)
    private static let block: Int64 = 4096

    init(service: any MetadataService, device: LUNDevice) {
        self.service = service
        self.device = device
    }

    /// Reads up to `count` bytes at `offset` (fewer at end of file) and hands them to `body`, which must not keep them.
    public func read<R>(_ ino: UInt64, offset: Int64, count: Int, _ body: (UnsafeRawBufferPointer) -> R) throws(Errno) -> R {
        try locks.withShared(ino) { () throws(Errno) -> R in
            // Whole blocks are read, so every piece is aligned for O_DIRECT; bytes past EOF in the last block are zeros.
            let start = offset / Self.block * Self.block
            let requestEnd = (offset + Int64(count) + Self.block - 1) / Self.block * Self.block
            let (size, mapped) = try service.mapping(ino, start..<requestEnd)
            let end = min(offset + Int64(count), Int64(size))
            guard offset < end else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
            let alignedEnd = (end + Self.block - 1) / Self.block * Self.block
            let segments = mapped.filter { $0.logical < alignedEnd }
            return try pool.withBuffer(minimumCapacity: Int(alignedEnd - start)) { (buffer) throws(Errno) -> R in
                for segment in segments {
                    let destination = buffer.pointer + Int(segment.logical - start)
                    if let physical = segment.physical, !segment.unwritten {
                        try readLUN(into: destination, count: Int(segment.length), at: physical)
                    } else {
                        memset(destination, 0, Int(segment.length))
                    }
                }
                return body(UnsafeRawBufferPointer(start: buffer.pointer + Int(offset - start), count: Int(end - offset)))
            }
        }
    }

    /// Where the bytes of a write come from.
    private enum Source {
        /// In memory; byte 0 is the write's first byte.
        case memory(UnsafeRawBufferPointer, offset: Int64)
        /// Waiting in a pipe (FUSE spliced the request), taken in file order; used for whole-block writes only.
        case pipe(Int32)
    }

    /// Writes `data` at `offset`, allocating what the range lacks.
    public func write(_ ino: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(Errno) {
        guard data.count > 0 else { return }
        try write(ino, offset..<(offset + Int64(data.count)), from: .memory(data, offset: offset))
    }

    /// Writes `count` bytes waiting in `pipe` at `offset`; both must be multiples of the block size. The LUN takes
    /// them from the pipe without a copy through this process (splice into the O_DIRECT descriptor).
    public func write(_ ino: UInt64, offset: Int64, count: Int, pipe: Int32) throws(Errno) {
        precondition(isAligned(offset, count), "pipe writes must be block-aligned")
        guard count > 0 else { return }
        try write(ino, offset..<(offset + Int64(count)), from: .pipe(pipe))
    }

    public var takesPipes: Bool { device.direct != nil }

    private func write(_ ino: UInt64, _ range: Range<Int64>, from source: Source) throws(Errno) {
        // Writes into allocated blocks, the common case, take the inode shared: overwrites change no metadata
        // but the size, and whole unwritten blocks just become written.
        // Whole-block writes take it shared even where they allocate: they write no padding, so they cannot
        // step on a neighbour's bytes.
        let done = try locks.withShared(ino) { () throws(Errno) -> Bool in
            let segments: [FileSegment]
            if isAligned(range.lowerBound, Int(range.upperBound - range.lowerBound)) {
                segments = try service.prepareWrite(ino, range)
            } else {
                segments = try service.mapping(ino, range).segments
                guard segments.allSatisfy({ $0.physical != nil && (!$0.unwritten || coversWholeBlocks($0)) }) else { return false }
            }
            try service.completeWrite(ino, filled: try put(segments, from: source), end: range.upperBound)
            return true
        }
        if done { return }
        // Holes, and parts of unwritten blocks: exclusive, because filling an unwritten block writes its
        // untouched bytes as zeros.
        try locks.withExclusive(ino) { () throws(Errno) in
            let segments = try service.prepareWrite(ino, range)
            try service.completeWrite(ino, filled: try put(segments, from: source), end: range.upperBound)
        }
    }

    /// Writes the segments in order; returns the blocks that stopped being unwritten.
    private func put(_ segments: [FileSegment], from source: Source) throws(Errno) -> [Range<Int64>] {
        var filled: [Range<Int64>] = []
        for segment in segments {
            if let blocks = try put(segment, from: source) { filled.append(blocks) }
        }
        return filled
    }

    /// Writes one segment; returns the blocks that stopped being unwritten, if any.
    private func put(_ segment: FileSegment, from source: Source) throws(Errno) -> Range<Int64>? {
        guard let physical = segment.physical else { throw Errno.io }
        switch source {
        case .memory(let data, let offset):
            if segment.unwritten && !coversWholeBlocks(segment) {
                return try fillUnwritten(segment, data: data, offset: offset)
            }
            try writeLUN(from: data.baseAddress! + Int(segment.logical - offset), count: Int(segment.length), at: physical)
        case .pipe(let pipe):
            try splice(from: pipe, count: Int(segment.length), at: physical)
        }
        return segment.unwritten ? segment.logical..<(segment.logical + segment.length) : nil
    }

    /// Moves `count` bytes from the pipe to the LUN. Pages the O_DIRECT descriptor refuses (misaligned in the
    /// pipe) are read out into an aligned buffer instead.
    private func splice(from pipe: Int32, count: Int, at physical: Int64) throws(Errno) {
        guard let direct = device.direct else { throw Errno.io }
        var done = 0
        while done < count {
            let moved = csvfs_splice_to(pipe, direct.rawValue, physical + Int64(done), count - done)
            if moved > 0 {
                done += moved
                continue
            }
            let error = moved == 0 ? Errno.io : Errno.current
            if error.code == EINTR { continue }
            guard error.code == EINVAL, isAligned(physical + Int64(done), count - done) else { throw error }
            try pool.withBuffer(minimumCapacity: count - done) { (buffer) throws(Errno) in
                try readPipe(pipe, into: buffer.pointer, count: count - done)
                try writeAligned(buffer.pointer, count: count - done, at: physical + Int64(done))
            }
            return
        }
    }

    private func readPipe(_ pipe: Int32, into buffer: UnsafeMutableRawPointer, count: Int) throws(Errno) {
        var done = 0
        while done < count {
            let n = try retryingOnInterrupt { Glibc.read(pipe, buffer + done, count - done) }
            if n == 0 { throw Errno.io }
            done += n
        }
    }

    /// Writes `count` bytes at `offset` that `fill` copies into an aligned buffer first, so they go to the LUN
    /// with O_DIRECT without another copy (FUSE hands write data over at an unaligned address, or in a pipe).
    public func write(_ ino: UInt64, offset: Int64, count: Int,
                      fill: (UnsafeMutableRawPointer) throws(Errno) -> Void) throws(Errno) {
        try pool.withBuffer(minimumCapacity: count) { (buffer) throws(Errno) in
            try fill(buffer.pointer)
            try write(ino, offset: offset, data: UnsafeRawBufferPointer(start: buffer.pointer, count: count))
        }
    }

    /// SEEK_DATA / SEEK_HOLE: the next byte at or after `offset` that holds data, or that is a hole (unwritten
    /// blocks count as holes: they read as zeros). ENXIO past the end, as lseek(2) says.
    public func seek(_ ino: UInt64, from offset: Int64, data wantData: Bool) throws(Errno) -> Int64 {
        guard offset >= 0 else { throw Errno(ENXIO) }
        let (size, segments) = try service.mapping(ino, offset..<Int64.max)
        guard offset < Int64(size) else { throw Errno(ENXIO) }
        for segment in segments where segment.logical < Int64(size) {
            let isData = segment.physical != nil && !segment.unwritten
            if isData == wantData { return max(offset, segment.logical) }
        }
        if wantData { throw Errno(ENXIO) }
        return Int64(size)
    }

    // MARK: blocks changing

    /// Sets attributes that include a size. A shrink that ends mid-block first zeroes the rest of the new last
    /// block on the LUN, so a later extension reads zeros there, as POSIX wants; the metadata frees what lies
    /// past it. Exclusive: no I/O on the inode meanwhile.
    public func truncate(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes {
        try locks.withExclusive(ino) { () throws(Errno) -> InodeAttributes in
            if let size = changes.size {
                let newEnd = Int64(size), blockEnd = (Int64(size) + Self.block - 1) / Self.block * Self.block
                if newEnd < blockEnd {
                    let (oldSize, segments) = try service.mapping(ino, newEnd..<blockEnd)
                    if size < oldSize { try zero(segments) }
                }
            }
            return try service.setAttributes(ino, changes)
        }
    }

    /// fallocate. Punching or zeroing a range first zeroes on the LUN the parts of it in blocks it covers only
    /// partly; the metadata frees (or marks unwritten) the blocks it covers whole. Exclusive, as `truncate`.
    public func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno) {
        try locks.withExclusive(ino) { () throws(Errno) in
            switch mode {
            case .allocate: break
            case .punchHole, .zeroRange:
                for partial in partialBlocks(of: range) { try zero(try service.mapping(ino, partial).segments) }
            }
            try service.fallocate(ino, range, mode: mode)
        }
    }

    /// The parts of `range` that lie in blocks it covers only partly.
    private func partialBlocks(of range: Range<Int64>) -> [Range<Int64>] {
        let innerStart = (range.lowerBound + Self.block - 1) / Self.block * Self.block
        let innerEnd = range.upperBound / Self.block * Self.block
        guard innerStart < innerEnd else { return [range] }
        return [range.lowerBound..<innerStart, innerEnd..<range.upperBound].filter { !$0.isEmpty }
    }

    /// Writes zeros over the written parts of sub-block segments (unwritten blocks and holes read as zeros).
    private func zero(_ segments: [FileSegment]) throws(Errno) {
        for segment in segments {
            guard let physical = segment.physical, !segment.unwritten else { continue }
            try pool.withBuffer(minimumCapacity: Int(segment.length)) { (buffer) throws(Errno) in
                memset(buffer.pointer, 0, Int(segment.length))
                try writeLUN(from: buffer.pointer, count: Int(segment.length), at: physical)
            }
        }
    }

    /// Writes a segment that lies in unwritten blocks, padded with zeros to whole blocks; returns the blocks filled.
    private func fillUnwritten(_ segment: FileSegment, data: UnsafeRawBufferPointer, offset: Int64) throws(Errno) -> Range<Int64> {
        guard let physical = segment.physical else { throw Errno.io }
        let blockStart = segment.logical / Self.block * Self.block
        let blockEnd = (segment.logical + segment.length + Self.block - 1) / Self.block * Self.block
        let length = Int(blockEnd - blockStart)
        try pool.withBuffer(minimumCapacity: length) { (buffer) throws(Errno) in
            let lead = Int(segment.logical - blockStart)
            memset(buffer.pointer, 0, lead)
            memcpy(buffer.pointer + lead, data.baseAddress! + Int(segment.logical - offset), Int(segment.length))
            memset(buffer.pointer + lead + Int(segment.length), 0, length - lead - Int(segment.length))
            try writeAligned(buffer.pointer, count: length, at: physical - Int64(lead))
        }
        return blockStart..<blockEnd
    }

    private func coversWholeBlocks(_ segment: FileSegment) -> Bool {
        segment.logical % Self.block == 0 && segment.length % Self.block == 0
    }

    private func isAligned(_ offset: Int64, _ count: Int) -> Bool {
        offset % Self.block == 0 && Int64(count) % Self.block == 0
    }

    /// O_DIRECT where the request is aligned. Only a request the device refuses as misaligned (EINVAL: it wants
    /// more than 4 KiB alignment) goes through the buffered descriptor instead; any other error is the caller's,
    /// since the page cache could answer for a device that has failed.
    private func readLUN(into destination: UnsafeMutableRawPointer, count: Int, at physical: Int64) throws(Errno) {
        if let direct = device.direct, isAligned(physical, count), Int(bitPattern: destination) % AlignedBuffer.alignment == 0 {
            do throws(Errno) {
                if try direct.read(into: destination, count: count, at: physical) < count { throw Errno.io }
                return
            } catch {
                guard error.code == EINVAL else { throw error }
            }
        }
        let n = try device.fd.read(into: destination, count: count, at: physical)
        if n < count { throw Errno.io }
    }

    /// Writes from any memory: whole blocks are staged in an aligned buffer and written O_DIRECT.
    private func writeLUN(from source: UnsafeRawPointer, count: Int, at physical: Int64) throws(Errno) {
        guard device.direct != nil, isAligned(physical, count) else {
            try device.fd.write(from: source, count: count, at: physical)
            return
        }
        if Int(bitPattern: source) % AlignedBuffer.alignment == 0 {
            try writeAligned(source, count: count, at: physical)
            return
        }
        try pool.withBuffer(minimumCapacity: count) { (buffer) throws(Errno) in
            memcpy(buffer.pointer, source, count)
            try writeAligned(buffer.pointer, count: count, at: physical)
        }
    }

    /// O_DIRECT; the buffered descriptor only for a request the device refuses as misaligned (see `readLUN`).
    private func writeAligned(_ source: UnsafeRawPointer, count: Int, at physical: Int64) throws(Errno) {
        if let direct = device.direct {
            do throws(Errno) {
                try direct.write(from: source, count: count, at: physical)
                return
            } catch {
                guard error.code == EINVAL else { throw error }
            }
        }
        try device.fd.write(from: source, count: count, at: physical)
    }
}
