/// One of the two 4 KiB "head" structures at 64 KiB and 128 KiB. The valid one with the higher
/// sequence number is current; updates go to the other slot.
struct VHDXHeader: Equatable {
    static let size = 4096
    static let offsets: [UInt64] = [0x10000, 0x20000]
    static let signature = Array("head".utf8)

    var sequenceNumber: UInt64
    var fileWriteGuid: GUID
    var dataWriteGuid: GUID
    var logGuid: GUID
    var logVersion: UInt16 = 0
    var version: UInt16 = 1
    var logLength: UInt32
    var logOffset: UInt64

    init(sequenceNumber: UInt64, fileWriteGuid: GUID, dataWriteGuid: GUID, logGuid: GUID, logLength: UInt32, logOffset: UInt64) {
        self.sequenceNumber = sequenceNumber
        self.fileWriteGuid = fileWriteGuid
        self.dataWriteGuid = dataWriteGuid
        self.logGuid = logGuid
        self.logLength = logLength
        self.logOffset = logOffset
    }

    init(parsing bytes: [UInt8], path: String, which: String) throws {
        guard bytes.count == Self.size, Array(bytes[0..<4]) == Self.signature else {
            throw VHDError.badSignature(path: path, what: "VHDX \(which) (expected 'head')")
        }
        guard try bytes.littleEndian(UInt32.self, at: 4) == CRC32C.checksum(bytes, zeroingFieldAt: 4) else {
            throw VHDError.badChecksum(path: path, what: "VHDX \(which)")
        }
        sequenceNumber = try bytes.littleEndian(UInt64.self, at: 8)
        fileWriteGuid = GUID(bytes: try bytes.bytes(at: 16, count: 16))
        dataWriteGuid = GUID(bytes: try bytes.bytes(at: 32, count: 16))
        logGuid = GUID(bytes: try bytes.bytes(at: 48, count: 16))
        logVersion = try bytes.littleEndian(UInt16.self, at: 64)
        version = try bytes.littleEndian(UInt16.self, at: 66)
        logLength = try bytes.littleEndian(UInt32.self, at: 68)
        logOffset = try bytes.littleEndian(UInt64.self, at: 72)
        guard version == 1, logVersion == 0 else {
            throw VHDError.unsupported(path: path, feature: "VHDX version \(version) / log version \(logVersion) in \(which)")
        }
        guard logLength % (1 << 20) == 0, logOffset % (1 << 20) == 0, logOffset >= 1 << 20 else {
            throw VHDError.corrupt(path: path, problem: "VHDX \(which) places the log at \(logOffset) (\(logLength) bytes), not on 1 MiB boundaries after the first MiB")
        }
    }

    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.putBytes(Self.signature, at: 0)
        bytes.putLittleEndian(sequenceNumber, at: 8)
        bytes.putBytes(fileWriteGuid.bytes, at: 16)
        bytes.putBytes(dataWriteGuid.bytes, at: 32)
        bytes.putBytes(logGuid.bytes, at: 48)
        bytes.putLittleEndian(logVersion, at: 64)
        bytes.putLittleEndian(version, at: 66)
        bytes.putLittleEndian(logLength, at: 68)
        bytes.putLittleEndian(logOffset, at: 72)
        bytes.putLittleEndian(CRC32C.checksum(bytes, zeroingFieldAt: 4), at: 4)
        return bytes
    }

    /// Reads both slots and returns the current header and its slot; `problems` lists a damaged slot.
    static func readCurrent(from file: ImageFile, problems: inout [String]) throws -> (header: VHDXHeader, slot: Int) {
        var valid: [(VHDXHeader, Int)] = []
        var firstError: VHDError?
        for (slot, offset) in offsets.enumerated() {
            do {
                let bytes = try file.read(at: offset, count: size, what: "VHDX header \(slot + 1)")
                valid.append((try VHDXHeader(parsing: bytes, path: file.path, which: "header \(slot + 1)"), slot))
            } catch let error as VHDError {
                firstError = firstError ?? error
                problems.append(error.description)
            }
        }
        guard let best = valid.max(by: { $0.0.sequenceNumber < $1.0.sequenceNumber }) else {
            throw firstError ?? VHDError.corrupt(path: file.path, problem: "no valid VHDX header")
        }
        return (best.0, best.1)
    }
}
