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

    /// Writes `data` at `offset`, allocating what the range lacks.
    public func write(_ ino: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(Errno) {
        guard data.count > 0 else { return }
        let range = offset..<(offset + Int64(data.count))
        // Writes into allocated blocks, the common case, take the inode shared: overwrites change no metadata
        // but the size, and whole unwritten blocks just become written.
        let overwritten = try locks.withShared(ino) { () throws(Errno) -> Bool in
            let (_, segments) = try service.mapping(ino, range)
            guard segments.allSatisfy({ $0.physical != nil && (!$0.unwritten || coversWholeBlocks($0)) }) else { return false }
            for segment in segments { try writeSegment(segment, data: data, offset: offset) }
            let filled = segments.filter(\.unwritten).map { $0.logical..<($0.logical + $0.length) }
            try service.completeWrite(ino, filled: filled, end: range.upperBound)
            return true
        }
        if overwritten { return }
        // Holes, and parts of unwritten blocks: exclusive, because filling an unwritten block writes its
        // untouched bytes as zeros.
        try locks.withExclusive(ino) { () throws(Errno) in
            let segments = try service.prepareWrite(ino, range)
            var filled: [Range<Int64>] = []
            for segment in segments {
                if segment.unwritten {
                    filled.append(try fillUnwritten(segment, data: data, offset: offset))
                } else {
                    try writeSegment(segment, data: data, offset: offset)
                }
            }
            try service.completeWrite(ino, filled: filled, end: range.upperBound)
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

    /// Serialises against I/O on the inode while its blocks change (truncate, fallocate).
    public func withBlocksChanging<R>(_ ino: UInt64, _ body: () throws(Errno) -> R) throws(Errno) -> R {
        try locks.withExclusive(ino, body)
    }

    private func writeSegment(_ segment: FileSegment, data: UnsafeRawBufferPointer, offset: Int64) throws(Errno) {
        guard let physical = segment.physical else { throw Errno.io }
        let source = data.baseAddress! + Int(segment.logical - offset)
        try writeLUN(from: source, count: Int(segment.length), at: physical)
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

    private func readLUN(into destination: UnsafeMutableRawPointer, count: Int, at physical: Int64) throws(Errno) {
        if let direct = device.direct, isAligned(physical, count), Int(bitPattern: destination) % AlignedBuffer.alignment == 0,
           (try? direct.read(into: destination, count: count, at: physical)) == count {
            return
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

    private func writeAligned(_ source: UnsafeRawPointer, count: Int, at physical: Int64) throws(Errno) {
        if let direct = device.direct, (try? direct.write(from: source, count: count, at: physical)) != nil { return }
        try device.fd.write(from: source, count: count, at: physical)
    }
}
