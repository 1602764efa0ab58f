/// Writes metadata pages through the log: entry written and flushed, then the pages in place and
/// flushed. A crash at any point leaves either the old pages or a log that replays to the new ones.
final class VHDXLogWriter {
    /// Raised by the test hook that stops a commit where a crash could, to prove the file stays consistent.
    struct SimulatedCrash: Error {}

    /// Where the test hook stops a commit.
    enum CrashPoint {
        /// Blocks are durable, the log entry is not written: the BAT still shows the old state.
        case beforeLogEntry
        /// The log entry is durable, the BAT in place is not updated: replay must finish the job.
        case afterLogEntry
    }

    let file: ImageFile
    let logOffset: UInt64
    let logLength: Int
    let logGuid: GUID
    private var sequenceNumber: UInt64 = 1
    private var position = 0
    var crashPoint: CrashPoint?

    init(file: ImageFile, logOffset: UInt64, logLength: Int, logGuid: GUID) {
        self.file = file
        self.logOffset = logOffset
        self.logLength = logLength
        self.logGuid = logGuid
    }

    /// Most pages one entry can carry in this log.
    private var pagesPerEntry: Int {
        let sectors = logLength / VHDXLogEntry.sectorSize
        var count = sectors - 1
        while count > 0, VHDXLogEntry.descriptorSectors(count: count) + count > sectors { count -= 1 }
        return min(count, 4096)
    }

    func commit(pages: [(fileOffset: UInt64, page: [UInt8])]) throws {
        guard pagesPerEntry > 0 else { throw VHDError.corrupt(path: file.path, problem: "VHDX log too small for one page") }
        var remaining = pages[...]
        while !remaining.isEmpty {
            let group = remaining.prefix(pagesPerEntry)
            remaining = remaining.dropFirst(group.count)
            let fileSize = try file.size()
            var entry = VHDXLogEntry(sequenceNumber: sequenceNumber, tail: 0, logGuid: logGuid,
                                     flushedFileOffset: fileSize, lastFileOffset: fileSize,
                                     descriptors: group.map { .data(fileOffset: $0.fileOffset, page: $0.page) })
            if position + entry.encodedLength > logLength { position = 0 }
            // Each entry is applied before the next is written, so each is its own whole sequence.
            entry.tail = UInt32(position)
            if crashPoint == .beforeLogEntry { throw SimulatedCrash() }
            try file.write(at: logOffset + UInt64(position), bytes: entry.encoded())
            try file.sync()
            if crashPoint == .afterLogEntry { throw SimulatedCrash() }
            for page in group { try file.write(at: page.fileOffset, bytes: page.page) }
            try file.sync()
            position += entry.encodedLength
            sequenceNumber += 1
        }
    }
}
