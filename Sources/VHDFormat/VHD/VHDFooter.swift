/// The 512-byte "conectix" footer at the end of every VHD (and copied at offset 0 of sparse ones).
struct VHDFooter: Equatable {
    static let size = 512
    static let cookie = Array("conectix".utf8)

    enum DiskTypeCode: UInt32 {
        case fixed = 2, dynamic = 3, differencing = 4
    }

    var features: UInt32 = 2
    var formatVersion: UInt32 = 0x0001_0000
    var dataOffset: UInt64
    var timestamp: UInt32
    var creatorApplication: [UInt8]
    var creatorVersion: UInt32
    var creatorHostOS: [UInt8]
    var originalSize: UInt64
    var currentSize: UInt64
    var geometry: CHSGeometry
    var diskType: DiskTypeCode
    var uniqueID: GUID
    var savedState: UInt8 = 0

    var creatorApplicationText: String { String(decoding: creatorApplication, as: UTF8.self) }

    static func hasCookie(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 8 && Array(bytes[0..<8]) == cookie
    }

    init(dataOffset: UInt64, timestamp: UInt32, creatorApplication: [UInt8], creatorVersion: UInt32,
         creatorHostOS: [UInt8], size: UInt64, geometry: CHSGeometry, diskType: DiskTypeCode, uniqueID: GUID) {
        self.dataOffset = dataOffset
        self.timestamp = timestamp
        self.creatorApplication = creatorApplication
        self.creatorVersion = creatorVersion
        self.creatorHostOS = creatorHostOS
        self.originalSize = size
        self.currentSize = size
        self.geometry = geometry
        self.diskType = diskType
        self.uniqueID = uniqueID
    }

    /// Parses a footer; `where` names its position in errors ("footer at end", "footer copy at 0").
    init(parsing bytes: [UInt8], path: String, where position: String) throws {
        guard bytes.count >= Self.size - 1, Self.hasCookie(bytes) else {
            throw VHDError.badSignature(path: path, what: "VHD \(position) (expected 'conectix')")
        }
        var raw = bytes
        if raw.count < Self.size { raw += [UInt8](repeating: 0, count: Self.size - raw.count) }
        do {
            let stored = try raw.bigEndian(UInt32.self, at: 64)
            guard stored == VHDChecksum.compute(raw, fieldOffset: 64) else {
                throw VHDError.badChecksum(path: path, what: "VHD \(position)")
            }
            features = try raw.bigEndian(UInt32.self, at: 8)
            formatVersion = try raw.bigEndian(UInt32.self, at: 12)
            dataOffset = try raw.bigEndian(UInt64.self, at: 16)
            timestamp = try raw.bigEndian(UInt32.self, at: 24)
            creatorApplication = try raw.bytes(at: 28, count: 4)
            creatorVersion = try raw.bigEndian(UInt32.self, at: 32)
            creatorHostOS = try raw.bytes(at: 36, count: 4)
            originalSize = try raw.bigEndian(UInt64.self, at: 40)
            currentSize = try raw.bigEndian(UInt64.self, at: 48)
            geometry = CHSGeometry(cylinders: try raw.bigEndian(UInt16.self, at: 56),
                                   heads: raw[58], sectorsPerTrack: raw[59])
            let typeCode = try raw.bigEndian(UInt32.self, at: 60)
            guard let type = DiskTypeCode(rawValue: typeCode) else {
                throw VHDError.unsupported(path: path, feature: "VHD disk type \(typeCode) in \(position)")
            }
            diskType = type
            uniqueID = GUID(bytes: try raw.bytes(at: 68, count: 16))
            savedState = raw[84]
        } catch is FieldOutOfBounds {
            throw VHDError.truncated(path: path, what: "VHD \(position)", needed: UInt64(Self.size), fileSize: UInt64(bytes.count))
        }
        guard formatVersion >> 16 == 1 else {
            throw VHDError.unsupported(path: path, feature: "VHD format version \(String(formatVersion, radix: 16))")
        }
    }

    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.putBytes(Self.cookie, at: 0)
        bytes.putBigEndian(features, at: 8)
        bytes.putBigEndian(formatVersion, at: 12)
        bytes.putBigEndian(dataOffset, at: 16)
        bytes.putBigEndian(timestamp, at: 24)
        bytes.putBytes(Array((creatorApplication + [0, 0, 0, 0]).prefix(4)), at: 28)
        bytes.putBigEndian(creatorVersion, at: 32)
        bytes.putBytes(Array((creatorHostOS + [0, 0, 0, 0]).prefix(4)), at: 36)
        bytes.putBigEndian(originalSize, at: 40)
        bytes.putBigEndian(currentSize, at: 48)
        bytes.putBigEndian(geometry.cylinders, at: 56)
        bytes[58] = geometry.heads
        bytes[59] = geometry.sectorsPerTrack
        bytes.putBigEndian(diskType.rawValue, at: 60)
        bytes.putBytes(uniqueID.bytes, at: 68)
        bytes[84] = savedState
        bytes.putBigEndian(VHDChecksum.compute(bytes, fieldOffset: 64), at: 64)
        return bytes
    }

    /// Virtual PC sizes a disk by its geometry; Hyper-V, Azure, disk2vhd and everyone else by the current size.
    var virtualSize: UInt64 {
        creatorApplicationText == "vpc " && geometry != VHDGeometry.maximum ? geometry.byteCount : currentSize
    }
}
