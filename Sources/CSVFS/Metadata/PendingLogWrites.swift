/// The write-ahead log frames of the transaction being committed, gathered into one write.
///
/// SQLite writes each log frame in two calls (its 24-byte header, then the page), so a commit touching five
/// pages costs ten writes. The frames of one transaction are contiguous in the log, so they are gathered here
/// and written in one call when the commit frame is complete: a commit is on the LUN when SQLite's commit
/// returns, as before, with one system call instead of ten. Anything that must see the log on the LUN (a
/// read of the log, a sync, a truncation, a close) flushes first.
struct PendingLogWrites {
    /// Where `bytes` go on the LUN.
    private var start: Int64 = 0
    private var bytes: [UInt8] = []
    /// Set by a frame header whose commit field is non-zero: the write after it (its page) ends the commit.
    private var commitFrameStarted = false

    static let frameHeaderSize = 24
    /// Beyond this, gathered frames are written even mid-transaction, bounding the memory a large
    /// transaction holds.
    static let limit = 1 << 20

    /// Gathers one write of SQLite into the log at LUN offset `offset`; writes everything out once a
    /// commit frame is complete, or when the write is not contiguous with what is gathered.
    mutating func add(_ data: UnsafeRawBufferPointer, at offset: Int64, lun: FileDescriptor) throws(Errno) {
        let end = start + Int64(bytes.count)
        if !bytes.isEmpty, offset < start || offset > end {
            try flush(lun: lun)
        }
        if bytes.isEmpty {
            start = offset
        }
        // SQLite may rewrite a frame of the open transaction in place (a page spilled earlier), so a write
        // can land inside what is gathered.
        let position = Int(offset - start)
        let overlap = min(data.count, bytes.count - position)
        if overlap > 0 {
            bytes.withUnsafeMutableBytes { target in
                target.baseAddress!.advanced(by: position).copyMemory(from: data.baseAddress!, byteCount: overlap)
            }
        }
        if overlap < data.count {
            bytes.append(contentsOf: data[max(0, overlap)...])
        }
        let endsCommit = commitFrameStarted
        commitFrameStarted = data.count == Self.frameHeaderSize && Self.commitField(of: data) != 0
        if endsCommit || bytes.count >= Self.limit {
            try flush(lun: lun)
        }
    }

    mutating func flush(lun: FileDescriptor) throws(Errno) {
        guard !bytes.isEmpty else { return }
        let written = bytes.withUnsafeBytes { raw in
            Result { () throws(Errno) in try lun.write(from: raw.baseAddress!, count: raw.count, at: start) }
        }
        try written.get()
        bytes.removeAll(keepingCapacity: true)
    }

    /// A frame header's second big-endian word: the database size in pages after a commit, zero otherwise.
    private static func commitField(of header: UnsafeRawBufferPointer) -> UInt32 {
        UInt32(bigEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    }
}
