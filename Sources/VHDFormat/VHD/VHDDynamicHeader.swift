/// The 1024-byte "cxsparse" header of dynamic and differencing VHDs.
struct VHDDynamicHeader: Equatable {
    static let size = 1024
    static let cookie = Array("cxsparse".utf8)
    static let locatorCount = 8

    struct Locator: Equatable {
        var platformCode: [UInt8]
        var dataSpace: UInt32
        var dataLength: UInt32
        var dataOffset: UInt64

        var code: String { String(decoding: platformCode, as: UTF8.self) }
        var isUsed: Bool { platformCode != [0, 0, 0, 0] && dataLength > 0 }
    }

    var tableOffset: UInt64
    var maxTableEntries: UInt32
    var blockSize: UInt32
    var parentUniqueID: GUID = .zero
    var parentTimestamp: UInt32 = 0
    var parentName: String = ""
    var locators: [Locator] = Array(repeating: Locator(platformCode: [0, 0, 0, 0], dataSpace: 0, dataLength: 0, dataOffset: 0),
                                     count: locatorCount)

    init(tableOffset: UInt64, maxTableEntries: UInt32, blockSize: UInt32) {
        self.tableOffset = tableOffset
        self.maxTableEntries = maxTableEntries
        self.blockSize = blockSize
    }

    init(parsing bytes: [UInt8], path: String) throws {
        guard bytes.count == Self.size else {
            throw VHDError.truncated(path: path, what: "VHD dynamic header", needed: UInt64(Self.size), fileSize: UInt64(bytes.count))
        }
        guard Array(bytes[0..<8]) == Self.cookie else {
            throw VHDError.badSignature(path: path, what: "VHD dynamic header (expected 'cxsparse')")
        }
        guard try bytes.bigEndian(UInt32.self, at: 36) == VHDChecksum.compute(bytes, fieldOffset: 36) else {
            throw VHDError.badChecksum(path: path, what: "VHD dynamic header")
        }
        tableOffset = try bytes.bigEndian(UInt64.self, at: 16)
        maxTableEntries = try bytes.bigEndian(UInt32.self, at: 28)
        blockSize = try bytes.bigEndian(UInt32.self, at: 32)
        parentUniqueID = GUID(bytes: try bytes.bytes(at: 40, count: 16))
        parentTimestamp = try bytes.bigEndian(UInt32.self, at: 56)
        parentName = UTF16Text.decode(try bytes.bytes(at: 64, count: 512), bigEndian: true)
        locators = try (0..<Self.locatorCount).map { index in
            let base = 576 + index * 24
            return Locator(platformCode: try bytes.bytes(at: base, count: 4),
                           dataSpace: try bytes.bigEndian(UInt32.self, at: base + 4),
                           dataLength: try bytes.bigEndian(UInt32.self, at: base + 8),
                           dataOffset: try bytes.bigEndian(UInt64.self, at: base + 16))
        }
        guard blockSize >= 512, blockSize.nonzeroBitCount == 1, blockSize <= 256 << 20 else {
            throw VHDError.corrupt(path: path, problem: "VHD block size \(blockSize) is not a power of two between 512 B and 256 MiB")
        }
    }

    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.putBytes(Self.cookie, at: 0)
        bytes.putBigEndian(UInt64.max, at: 8)
        bytes.putBigEndian(tableOffset, at: 16)
        bytes.putBigEndian(UInt32(0x0001_0000), at: 24)
        bytes.putBigEndian(maxTableEntries, at: 28)
        bytes.putBigEndian(blockSize, at: 32)
        bytes.putBytes(parentUniqueID.bytes, at: 40)
        bytes.putBigEndian(parentTimestamp, at: 56)
        bytes.putBytes(Array(UTF16Text.encode(parentName, bigEndian: true).prefix(512)), at: 64)
        for (index, locator) in locators.prefix(Self.locatorCount).enumerated() {
            let base = 576 + index * 24
            bytes.putBytes(Array((locator.platformCode + [0, 0, 0, 0]).prefix(4)), at: base)
            bytes.putBigEndian(locator.dataSpace, at: base + 4)
            bytes.putBigEndian(locator.dataLength, at: base + 8)
            bytes.putBigEndian(locator.dataOffset, at: base + 16)
        }
        bytes.putBigEndian(VHDChecksum.compute(bytes, fieldOffset: 36), at: 36)
        return bytes
    }
}
