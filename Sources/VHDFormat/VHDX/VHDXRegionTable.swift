/// The "regi" table naming where the BAT and metadata regions are (copies at 192 KiB and 256 KiB).
struct VHDXRegionTable: Equatable {
    static let size = 65536
    static let offsets: [UInt64] = [0x30000, 0x40000]
    static let signature = Array("regi".utf8)
    static let batGuid = GUID(mixedEndianString: "2DC27766-F623-4200-9D64-115E9BFD4A08")!
    static let metadataGuid = GUID(mixedEndianString: "8B7CA206-4790-4B9A-B8FE-575F050F886E")!

    struct Entry: Equatable {
        var guid: GUID
        var fileOffset: UInt64
        var length: UInt32
        var required: Bool
    }

    var entries: [Entry]

    init(entries: [Entry]) { self.entries = entries }

    init(parsing bytes: [UInt8], path: String, which: String) throws {
        guard bytes.count == Self.size, Array(bytes[0..<4]) == Self.signature else {
            throw VHDError.badSignature(path: path, what: "VHDX \(which) (expected 'regi')")
        }
        guard try bytes.littleEndian(UInt32.self, at: 4) == CRC32C.checksum(bytes, zeroingFieldAt: 4) else {
            throw VHDError.badChecksum(path: path, what: "VHDX \(which)")
        }
        let count = try bytes.littleEndian(UInt32.self, at: 8)
        guard count <= 2047 else {
            throw VHDError.corrupt(path: path, problem: "VHDX \(which) claims \(count) entries (at most 2047)")
        }
        entries = try (0..<Int(count)).map { index in
            let base = 16 + index * 32
            return Entry(guid: GUID(bytes: try bytes.bytes(at: base, count: 16)),
                         fileOffset: try bytes.littleEndian(UInt64.self, at: base + 16),
                         length: try bytes.littleEndian(UInt32.self, at: base + 24),
                         required: try bytes.littleEndian(UInt32.self, at: base + 28) & 1 != 0)
        }
        for entry in entries {
            if entry.required, entry.guid != Self.batGuid, entry.guid != Self.metadataGuid {
                throw VHDError.unsupported(path: path, feature: "required VHDX region \(entry.guid.mixedEndianString)")
            }
            guard entry.fileOffset % (1 << 20) == 0, entry.fileOffset >= 1 << 20, entry.length % (1 << 20) == 0, entry.length > 0 else {
                throw VHDError.corrupt(path: path, problem: "VHDX region \(entry.guid.mixedEndianString) at \(entry.fileOffset) (\(entry.length) bytes) is not 1 MiB aligned")
            }
        }
    }

    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.putBytes(Self.signature, at: 0)
        bytes.putLittleEndian(UInt32(entries.count), at: 8)
        for (index, entry) in entries.enumerated() {
            let base = 16 + index * 32
            bytes.putBytes(entry.guid.bytes, at: base)
            bytes.putLittleEndian(entry.fileOffset, at: base + 16)
            bytes.putLittleEndian(entry.length, at: base + 24)
            bytes.putLittleEndian(UInt32(entry.required ? 1 : 0), at: base + 28)
        }
        bytes.putLittleEndian(CRC32C.checksum(bytes, zeroingFieldAt: 4), at: 4)
        return bytes
    }

    func entry(_ guid: GUID) -> Entry? { entries.first { $0.guid == guid } }

    /// Returns the first valid copy; a damaged copy is reported in `problems`.
    static func read(from file: ImageFile, problems: inout [String]) throws -> VHDXRegionTable {
        var firstError: VHDError?
        var tables: [VHDXRegionTable] = []
        for (slot, offset) in offsets.enumerated() {
            do {
                let bytes = try file.read(at: offset, count: size, what: "VHDX region table \(slot + 1)")
                tables.append(try VHDXRegionTable(parsing: bytes, path: file.path, which: "region table \(slot + 1)"))
            } catch let error as VHDError {
                firstError = firstError ?? error
                problems.append(error.description)
            }
        }
        guard let table = tables.first else {
            throw firstError ?? VHDError.corrupt(path: file.path, problem: "no valid VHDX region table")
        }
        if tables.count == 2, tables[0] != tables[1] { problems.append("VHDX region tables 1 and 2 differ") }
        return table
    }
}
