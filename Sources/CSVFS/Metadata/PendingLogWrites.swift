/// The write-ahead log frames of the transaction being committed, gathered into one write.
///
/// SQLite writes each log frame in two calls (its 24-byte header, then the page), so a commit touching five
/// pages costs ten writes. The frames of one transaction are contiguous in the log, so they are gathered here
/// and written in one call when the commit frame is complete: a commit is on the LUN when SQLite's commit
/// returns, as before, with one system call instead of ten. Anything that must see the log on the LUN (a
/// read of the log, a sync, a truncation, a close) flushes first.
///
/// Log frames are 4120 bytes, so appends end mid-page. Written as they are, each append would make the
/// kernel read the page it starts in from the device first whenever that page is not cached (after memory
/// pressure, or on a recycled log). So appends at the log's end are written as whole pages: the head of the
/// first page from the copy of the log's last partial page kept here, the tail of the last page as zeros.
/// Bytes past the log's end belong to no frame of the current log (SQLite stops reading at the first frame
/// whose salt or checksum is wrong, and zeros are such a frame).
struct PendingLogWrites {
    /// The log's first byte on the LUN: SQLite writes a new log header there when it starts the log anew.
    let logStart: Int64
    /// Where `bytes` go on the LUN.
    private var start: Int64 = 0
    private var bytes: [UInt8] = []
    /// The end of what the current log holds, once known (after SQLite wrote the log header), and a copy of
    /// the bytes of its last page up to there.
    private var logEnd: Int64?
    private var lastPage: [UInt8] = []
    /// Set by a frame header whose commit field is non-zero: the write after it (its page) ends the commit.
    private var commitFrameStarted = false

    static let pageSize: Int64 = 4096
    static let frameHeaderSize = 24
    /// Beyond this, gathered frames are written even mid-transaction, bounding the memory a large
    /// transaction holds.
    static let limit = 1 << 20

    init(logStart: Int64) { self.logStart = logStart }

    /// Nothing gathered: what was added so far is on the LUN.
    var isEmpty: Bool { bytes.isEmpty }

    /// Gathers one write of SQLite into the log at LUN offset `offset`; writes everything out once a
    /// commit frame is complete, or when the write is not contiguous with what is gathered.
    mutating func add(_ data: UnsafeRawBufferPointer, at offset: Int64, lun: FileDescriptor) throws(Errno) {
        if !bytes.isEmpty, offset < start || offset > start + Int64(bytes.count) {
            try flush(lun: lun)
        }
        if bytes.isEmpty {
            if offset == logStart {
                // A new log: nothing of the old one counts any more.
                logEnd = logStart
                lastPage = []
            }
            if let logEnd, offset >= logEnd - Int64(lastPage.count), offset <= logEnd {
                // Starting in the log's last page: gather from that page's start, so the write covers it whole.
                start = logEnd - Int64(lastPage.count)
                bytes.append(contentsOf: lastPage)
            } else {
                start = offset
            }
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
        let writeEnd = start + Int64(bytes.count)
        if let end = logEnd, start <= end, writeEnd >= end {
            // Reaching the log's end: pad the last page with zeros and keep a copy of its live bytes.
            bytes.append(contentsOf: repeatElement(0, count: Int((Self.pageSize - writeEnd % Self.pageSize) % Self.pageSize)))
            let live = Int(writeEnd - start)
            lastPage = Array(bytes[(live - Int(writeEnd % Self.pageSize))..<live])
            logEnd = writeEnd
        } else if let end = logEnd, writeEnd > end - Int64(lastPage.count), start < end {
            // A rewrite inside the log that touches its last page: keep the copy of that page current.
            let pageStart = end - Int64(lastPage.count)
            for position in max(start, pageStart)..<min(writeEnd, end) {
                lastPage[Int(position - pageStart)] = bytes[Int(position - start)]
            }
        } else if let end = logEnd, start > end {
            // A write past the end, leaving a gap of unknown bytes: forget the end until the next log header.
            forgetEnd()
        }
        let written = bytes.withUnsafeBytes { raw in
            Result { () throws(Errno) in try lun.write(from: raw.baseAddress!, count: raw.count, at: start) }
        }
        bytes.removeAll(keepingCapacity: true)
        if case .failure = written { forgetEnd() }
        try written.get()
    }

    /// After the log was truncated: its end is unknown again until SQLite writes a new header.
    mutating func forgetEnd() {
        logEnd = nil
        lastPage = []
    }

    /// A frame header's second big-endian word: the database size in pages after a commit, zero otherwise.
    private static func commitField(of header: UnsafeRawBufferPointer) -> UInt32 {
        UInt32(bigEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    }
}
