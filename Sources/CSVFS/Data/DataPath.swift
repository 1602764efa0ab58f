import CSVFSSystem
import Glibc

/// File data between FUSE and the LUN: reads and writes go straight to the extents' LUN offsets, with O_DIRECT
/// where the LUN supports it, so no host's page cache holds file data another host may change. Writes that do
/// not cover whole blocks become read-modify-write of the blocks they touch. The metadata service is asked only
/// where the map changes.
public final class DataPath: Sendable {
    private let service: any MetadataService
    private let locks = InodeLocks()
    private let pool = AlignedBufferPool(bufferSize: (1 << 20) + 8192)
    /// The descriptor file data goes through: the LUN's O_DIRECT one, or where the medium has no O_DIRECT
    /// (tmpfs) the buffered one, for everything.
    private let dataFD: FileDescriptor
    /// Whether `dataFD` is O_DIRECT: every transfer then is whole, aligned blocks.
    public let isDirect: Bool
    private let io: any LUNIO
    /// The same engine as `io` when it is AIO: reads then answer from its completions.
    private let engine: AIOEngine?
    private static let block: Int64 = 4096

    public init(service: any MetadataService, device: LUNDevice, io mode: LUNIOMode) throws(Errno) {
        self.service = service
        if let direct = device.direct, Self.takesBlockIO(direct) {
            dataFD = direct
            isDirect = true
        } else {
            dataFD = device.fd
            isDirect = false
        }
        switch mode {
        case .aio:
            let engine = try AIOEngine(fd: dataFD, wakeFD: device.fd)
            self.engine = engine
            io = engine
        case .threads:
            engine = nil
            io = ThreadedLUNIO(fd: dataFD)
        }
    }

    /// Whether an O_DIRECT descriptor takes 4 KiB-aligned transfers. A device that wants larger ones (EINVAL)
    /// gets the buffered descriptor for all data; any other answer is left for the requests to meet.
    private static func takesBlockIO(_ direct: FileDescriptor) -> Bool {
        let probe = AlignedBuffer(capacity: Int(block))
        return pread(direct.rawValue, probe.pointer, Int(block), 0) >= 0 || errno != EINVAL
    }

    /// Stops the I/O engine; no request may come afterwards.
    public func close() { io.close() }

    /// Waits until every read started with `startRead` has called its `done`: before the FUSE session they
    /// answer goes away. No request may come meanwhile.
    public func drain() { engine?.drain() }

    /// Reads up to `count` bytes at `offset` (fewer at end of file) and hands them to `body`, which must not keep them.
    public func read<R>(_ ino: UInt64, offset: Int64, count: Int, _ body: (UnsafeRawBufferPointer) -> R) throws(Errno) -> R {
        try locks.withShared(ino) { () throws(Errno) -> R in
            guard let plan = try planRead(ino, offset: offset, count: count) else {
                return body(UnsafeRawBufferPointer(start: nil, count: 0))
            }
            return try pool.withBuffer(minimumCapacity: plan.bufferSize) { (buffer) throws(Errno) -> R in
                try io.perform(plan.transfers(into: buffer.pointer))
                return body(plan.requested(in: buffer.pointer))
            }
        }
    }

    /// Reads as `read` does, but with the AIO engine returns as soon as the LUN reads are submitted: `done` gets
    /// the bytes (valid during the call only) or the error on the engine's reaper thread, and must not block.
    /// With the thread-per-request engine it reads on the calling thread and calls `done` before returning.
    public func startRead(_ ino: UInt64, offset: Int64, count: Int,
                          done: @escaping @Sendable (Result<UnsafeRawBufferPointer, Errno>) -> Void) {
        guard let engine else {
            do throws(Errno) {
                try read(ino, offset: offset, count: count) { done(.success($0)) }
            } catch {
                done(.failure(error))
            }
            return
        }
        locks.lockShared(ino)
        let plan: ReadPlan
        do throws(Errno) {
            guard let planned = try planRead(ino, offset: offset, count: count) else {
                locks.unlockShared(ino)
                return done(.success(UnsafeRawBufferPointer(start: nil, count: 0)))
            }
            plan = planned
        } catch {
            locks.unlockShared(ino)
            return done(.failure(error))
        }
        // Borrowed from the pool until the completion, which runs on the reaper thread.
        let buffer = pool.borrow(minimumCapacity: plan.bufferSize)
        let (locks, pool) = (locks, pool)
        engine.start(plan.transfers(into: buffer.pointer)) { error in
            locks.unlockShared(ino)
            if let error {
                done(.failure(error))
            } else {
                done(.success(plan.requested(in: buffer.pointer)))
            }
            pool.giveBack(buffer)
        }
    }

    /// What a read moves: whole blocks, so every piece is aligned for O_DIRECT; bytes past EOF in the last
    /// block are zeros.
    private struct ReadPlan: Sendable {
        let offset: Int64
        /// The first block's start, where the buffer begins.
        let start: Int64
        /// Where the answer ends: the request's end, or the end of the file.
        let end: Int64
        let segments: [FileSegment]

        var alignedEnd: Int64 { DataPath.blockEnd(end) }
        var bufferSize: Int { Int(alignedEnd - start) }

        /// The LUN reads into `buffer`; holes and unwritten blocks are zeroed in it here.
        func transfers(into buffer: UnsafeMutableRawPointer) -> [LUNTransfer] {
            var transfers: [LUNTransfer] = []
            for segment in segments where segment.logical < alignedEnd {
                let destination = buffer + Int(segment.logical - start)
                let length = Int(min(segment.length, alignedEnd - segment.logical))
                if let physical = segment.physical, !segment.unwritten {
                    transfers.append(.read(into: destination, count: length, at: physical))
                } else {
                    memset(destination, 0, length)
                }
            }
            return transfers
        }

        func requested(in buffer: UnsafeMutableRawPointer) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(start: buffer + Int(offset - start), count: Int(end - offset))
        }
    }

    /// Under the inode's shared hold: nil when nothing is to be read (at or past the end of the file).
    private func planRead(_ ino: UInt64, offset: Int64, count: Int) throws(Errno) -> ReadPlan? {
        let start = Self.blockStart(offset)
        let (size, segments) = try service.mapping(ino, start..<Self.blockEnd(offset + Int64(count)))
        let end = min(offset + Int64(count), Int64(size))
        guard offset < end else { return nil }
        return ReadPlan(offset: offset, start: start, end: end, segments: segments)
    }

    /// Where the bytes of a write come from.
    private enum Source {
        /// In memory; byte 0 is the write's first byte.
        case memory(UnsafeRawBufferPointer)
        /// Waiting in a pipe (FUSE spliced the request), taken in file order; used for whole-block writes only.
        case pipe(Int32)
    }

    /// Writes `data` at `offset`, allocating what the range lacks.
    public func write(_ ino: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(Errno) {
        guard data.count > 0 else { return }
        let range = offset..<(offset + Int64(data.count))
        if isAligned(offset, data.count) {
            try writeBlocks(ino, range, from: .memory(data))
            return
        }
        try locks.withExclusive(ino) { () throws(Errno) in
            let blocks = Self.blocks(covering: range)
            let segments = try service.prepareWrite(ino, blocks)
            guard segments.allSatisfy({ $0.physical != nil }) else { throw Errno.io }
            try rewrite(blocks, segments: segments, changing: range) { buffer in
                memcpy(buffer + Int(range.lowerBound - blocks.lowerBound), data.baseAddress!, data.count)
            }
            try service.completeWrite(ino, filled: Self.unwrittenBlocks(segments), end: range.upperBound)
        }
    }

    /// Writes `count` bytes waiting in `pipe` at `offset`; both must be multiples of the block size. The LUN takes
    /// them from the pipe without a copy through this process (splice into the O_DIRECT descriptor).
    public func write(_ ino: UInt64, offset: Int64, count: Int, pipe: Int32) throws(Errno) {
        precondition(isAligned(offset, count), "pipe writes must be block-aligned")
        guard count > 0 else { return }
        try writeBlocks(ino, offset..<(offset + Int64(count)), from: .pipe(pipe))
    }

    public var takesPipes: Bool { isDirect }

    /// Writes whole blocks. The inode is held shared even where they allocate: they write no padding, so they
    /// cannot step on a neighbour's bytes, and whole unwritten blocks just become written.
    private func writeBlocks(_ ino: UInt64, _ range: Range<Int64>, from source: Source) throws(Errno) {
        try locks.withShared(ino) { () throws(Errno) in
            let segments = try service.prepareWrite(ino, range)
            guard segments.allSatisfy({ $0.physical != nil }) else { throw Errno.io }
            switch source {
            case .memory(let data):
                try put(segments, from: data, origin: range.lowerBound)
            case .pipe(let pipe):
                for segment in segments { try splice(from: pipe, count: Int(segment.length), at: segment.physical!) }
            }
            try service.completeWrite(ino, filled: Self.unwrittenBlocks(segments), end: range.upperBound)
        }
    }

    /// Writes the allocated `segments` from `data`, whose first byte is at file offset `origin`; all in flight at once.
    private func put(_ segments: [FileSegment], from data: UnsafeRawBufferPointer, origin: Int64) throws(Errno) {
        func transfers(from base: UnsafeRawPointer) -> [LUNTransfer] {
            segments.map { .write(from: base + Int($0.logical - origin), count: Int($0.length), at: $0.physical!) }
        }
        if isDirect && Int(bitPattern: data.baseAddress!) % AlignedBuffer.alignment != 0 {
            try pool.withBuffer(minimumCapacity: data.count) { (buffer) throws(Errno) in
                memcpy(buffer.pointer, data.baseAddress!, data.count)
                try io.perform(transfers(from: buffer.pointer))
            }
        } else {
            try io.perform(transfers(from: data.baseAddress!))
        }
    }

    /// Read-modify-write of whole blocks. The blocks of `segments` (within `blocks`) are assembled in an aligned
    /// buffer, their bytes outside `range` read from the LUN where written and zeros where unwritten (never the
    /// old bytes of another file); `patch` changes `range` in the buffer (which starts at `blocks.lowerBound`);
    /// then the blocks go back whole. The caller holds the inode exclusive, so no other write sits in between.
    private func rewrite(_ blocks: Range<Int64>, segments: [FileSegment], changing range: Range<Int64>,
                         patch: (UnsafeMutableRawPointer) -> Void) throws(Errno) {
        try pool.withBuffer(minimumCapacity: Int(blocks.count)) { (buffer) throws(Errno) in
            // Only the first and the last block can hold bytes outside `range`.
            var edges: [Int64] = []
            if range.lowerBound % Self.block != 0 { edges.append(Self.blockStart(range.lowerBound)) }
            if range.upperBound % Self.block != 0, !edges.contains(Self.blockStart(range.upperBound)) {
                edges.append(Self.blockStart(range.upperBound))
            }
            var reads: [LUNTransfer] = []
            for edge in edges {
                guard let segment = segments.first(where: { $0.logical <= edge && edge < $0.logical + $0.length }),
                      let physical = segment.physical else { continue }
                let destination = buffer.pointer + Int(edge - blocks.lowerBound)
                if segment.unwritten {
                    memset(destination, 0, Int(Self.block))
                } else {
                    reads.append(.read(into: destination, count: Int(Self.block), at: physical + (edge - segment.logical)))
                }
            }
            try io.perform(reads)
            patch(buffer.pointer)
            try io.perform(segments.compactMap { segment in
                segment.physical.map { .write(from: buffer.pointer + Int(segment.logical - blocks.lowerBound),
                                              count: Int(segment.length), at: $0) }
            })
        }
    }

    /// Moves `count` bytes from the pipe to the LUN. Pages the O_DIRECT descriptor refuses (misaligned in the
    /// pipe) are read out into an aligned buffer instead.
    private func splice(from pipe: Int32, count: Int, at physical: Int64) throws(Errno) {
        var done = 0
        while done < count {
            let moved = csvfs_splice_to(pipe, dataFD.rawValue, physical + Int64(done), count - done)
            if moved > 0 {
                done += moved
                continue
            }
            let error = moved == 0 ? Errno.io : Errno.current
            if error.code == EINTR { continue }
            guard error.code == EINVAL, isAligned(physical + Int64(done), count - done) else { throw error }
            try pool.withBuffer(minimumCapacity: count - done) { (buffer) throws(Errno) in
                try readPipe(pipe, into: buffer.pointer, count: count - done)
                try io.perform([.write(from: buffer.pointer, count: count - done, at: physical + Int64(done))])
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

    /// Sets attributes that include a size. The bytes past the end of a file in its last block are zeroed on
    /// the LUN, so an extension reads zeros there, as POSIX wants: after a shrink that ends mid-block, once the
    /// shrink is durable (zeroed before, a power cut that lost the shrink would leave the file at its old size
    /// with zeros where its data was); and again before an extension, for a shrink whose zeroes a power cut
    /// lost. The metadata frees what lies past the last block. Exclusive: no I/O on the inode meanwhile.
    public func truncate(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes {
        try locks.withExclusive(ino) { () throws(Errno) -> InodeAttributes in
            guard let size = changes.size.map({ Int64($0) }), size > 0 else { return try service.setAttributes(ino, changes) }
            let tail = size..<Self.blockEnd(size)
            let (oldSize, segments) = try service.mapping(ino, Self.blocks(covering: tail))
            let end = Int64(oldSize)
            if size > end, end % Self.block != 0 {
                let oldTail = end..<Self.blockEnd(end)
                // Durable before the size that exposes them, or a power cut could keep the size and lose the zeros.
                if try zero(oldTail, in: try service.mapping(ino, Self.blocks(covering: oldTail)).segments) {
                    try service.sync(reportingTo: nil)
                }
            }
            guard size < end, !tail.isEmpty else { return try service.setAttributes(ino, changes) }
            // The shrink keeps the blocks up to the tail's end, so `segments` still map them after it.
            let attributes = try service.setAttributes(ino, changes)
            try service.sync(reportingTo: nil)
            try zero(tail, in: segments)
            return attributes
        }
    }

    /// fallocate. Punching or zeroing a range first zeroes on the LUN the parts of it in blocks it covers only
    /// partly; the metadata frees (or marks unwritten) the blocks it covers whole. Exclusive, as `truncate`.
    public func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno) {
        try locks.withExclusive(ino) { () throws(Errno) in
            switch mode {
            case .allocate: break
            case .punchHole, .zeroRange:
                for partial in partialBlocks(of: range) {
                    try zero(partial, in: try service.mapping(ino, Self.blocks(covering: partial)).segments)
                }
            }
            try service.fallocate(ino, range, mode: mode)
        }
    }

    /// The parts of `range` that lie in blocks it covers only partly.
    private func partialBlocks(of range: Range<Int64>) -> [Range<Int64>] {
        let innerStart = Self.blockEnd(range.lowerBound)
        let innerEnd = Self.blockStart(range.upperBound)
        guard innerStart < innerEnd else { return [range] }
        return [range.lowerBound..<innerStart, innerEnd..<range.upperBound].filter { !$0.isEmpty }
    }

    /// Zeroes `range` on the LUN where it lies in written blocks (unwritten blocks and holes read as zeros);
    /// `segments` map the blocks covering it. Whether it wrote anything.
    @discardableResult
    private func zero(_ range: Range<Int64>, in segments: [FileSegment]) throws(Errno) -> Bool {
        let written = segments.filter { $0.physical != nil && !$0.unwritten }
        guard !written.isEmpty else { return false }
        let blocks = Self.blocks(covering: range)
        try rewrite(blocks, segments: written, changing: range) { buffer in
            memset(buffer + Int(range.lowerBound - blocks.lowerBound), 0, Int(range.count))
        }
        return true
    }

    private static func unwrittenBlocks(_ segments: [FileSegment]) -> [Range<Int64>] {
        segments.filter(\.unwritten).map { $0.logical..<($0.logical + $0.length) }
    }

    private static func blockStart(_ offset: Int64) -> Int64 { offset / block * block }
    private static func blockEnd(_ offset: Int64) -> Int64 { (offset + block - 1) / block * block }
    private static func blocks(covering range: Range<Int64>) -> Range<Int64> {
        blockStart(range.lowerBound)..<blockEnd(range.upperBound)
    }

    private func isAligned(_ offset: Int64, _ count: Int) -> Bool {
        offset % Self.block == 0 && Int64(count) % Self.block == 0
    }
}
