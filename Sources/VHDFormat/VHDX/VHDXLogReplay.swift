/// Finds the active sequence of a VHDX log: entries of the header's LogGuid with consecutive sequence
/// numbers, from the head's tail to the head, choosing the head with the highest sequence number.
/// Stale entries of older sessions (other LogGuids) and torn entries are ignored.
enum VHDXLogReplay {
    struct Sequence {
        var entries: [VHDXLogEntry]
        var head: VHDXLogEntry? { entries.last }
    }

    /// Hyper-V and qemu write 1 MiB logs; anything past this is refused rather than read into memory.
    static let maximumLogLength: UInt32 = 64 << 20
    /// Bound on the steps spent following candidate sequences, so a hostile log cannot take forever.
    static let maximumWalkSteps = 1 << 20

    static func activeSequence(log: [UInt8], logGuid: GUID) -> Sequence {
        let logLength = log.count
        let sector = VHDXLogEntry.sectorSize
        // Entries may wrap around the end of the circular log.
        func bytes(at position: Int, count: Int) -> [UInt8] {
            if position + count <= logLength { return Array(log[position..<position + count]) }
            let first = logLength - position
            return Array(log[position..<logLength]) + Array(log[0..<count - first])
        }
        var entries: [Int: VHDXLogEntry] = [:]
        // Headers that claim long entries but fail their checksum cost a checksum each: bound the total.
        var checksummed = 0
        for position in stride(from: 0, to: logLength, by: sector) where checksummed <= 8 * logLength {
            guard let length = VHDXLogEntry.peekLength(bytes(at: position, count: 64), logGuid: logGuid, logLength: logLength) else { continue }
            checksummed += length
            guard let entry = VHDXLogEntry(parsing: bytes(at: position, count: length), logGuid: logGuid) else { continue }
            entries[position] = entry
        }
        let heads = entries.sorted { $0.value.sequenceNumber > $1.value.sequenceNumber }
        var steps = 0
        for (headPosition, head) in heads where steps < maximumWalkSteps {
            var position = Int(head.tail)
            var chain: [VHDXLogEntry] = []
            while let entry = entries[position], chain.count <= entries.count, steps < maximumWalkSteps {
                steps += 1
                // Parsed entries have sequence numbers above 0, so this cannot wrap (previous + 1 could).
                if let previous = chain.last, entry.sequenceNumber - 1 != previous.sequenceNumber { break }
                chain.append(entry)
                if position == headPosition { return Sequence(entries: chain) }
                position = (position + entry.encodedLength) % logLength
            }
        }
        return Sequence(entries: [])
    }
}
