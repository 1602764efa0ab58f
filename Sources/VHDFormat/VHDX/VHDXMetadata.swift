/// The metadata region: disk parameters and, for differencing disks, the parent locator.
struct VHDXMetadata: Equatable {
    static let signature = Array("metadata".utf8)
    static let fileParametersGuid = GUID(mixedEndianString: "CAA16737-FA36-4D43-B3B6-33F0AA44E76B")!
    static let virtualDiskSizeGuid = GUID(mixedEndianString: "2FA54224-CD1B-4876-B211-5DBED83BF4B8")!
    static let page83Guid = GUID(mixedEndianString: "BECA12AB-B2E6-4523-93EF-C309E000C746")!
    static let logicalSectorSizeGuid = GUID(mixedEndianString: "8141BF1D-A96F-4709-BA47-F233A8FAAB5F")!
    static let physicalSectorSizeGuid = GUID(mixedEndianString: "CDA348C7-445D-4471-9CC9-E9885251C556")!
    static let parentLocatorGuid = GUID(mixedEndianString: "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")!
    static let vhdxLocatorType = GUID(mixedEndianString: "B04AEFB7-D19E-4A81-B789-25B8E9445913")!
    /// Largest virtual disk the format allows (64 TiB).
    static let maximumVirtualSize: UInt64 = 64 << 40

    var blockSize: UInt32
    var leaveBlocksAllocated: Bool
    var hasParent: Bool
    var virtualSize: UInt64
    var diskIdentifier: GUID
    var logicalSectorSize: UInt32
    var physicalSectorSize: UInt32
    /// Parent locator key/value pairs in file order.
    var parentLocator: [(key: String, value: String)]

    static func == (lhs: VHDXMetadata, rhs: VHDXMetadata) -> Bool {
        lhs.blockSize == rhs.blockSize && lhs.virtualSize == rhs.virtualSize && lhs.hasParent == rhs.hasParent
            && lhs.parentLocator.map(\.key) == rhs.parentLocator.map(\.key)
            && lhs.parentLocator.map(\.value) == rhs.parentLocator.map(\.value)
    }

    func parentValue(_ key: String) -> String? { parentLocator.first { $0.key == key }?.value }

    init(blockSize: UInt32, leaveBlocksAllocated: Bool = false, hasParent: Bool, virtualSize: UInt64, diskIdentifier: GUID,
         logicalSectorSize: UInt32, physicalSectorSize: UInt32, parentLocator: [(key: String, value: String)]) {
        self.blockSize = blockSize
        self.leaveBlocksAllocated = leaveBlocksAllocated
        self.hasParent = hasParent
        self.virtualSize = virtualSize
        self.diskIdentifier = diskIdentifier
        self.logicalSectorSize = logicalSectorSize
        self.physicalSectorSize = physicalSectorSize
        self.parentLocator = parentLocator
    }

    init(parsing region: [UInt8], path: String) throws {
        func corrupt(_ problem: String) -> VHDError { .corrupt(path: path, problem: "VHDX metadata: \(problem)") }
        guard region.count >= 32, Array(region[0..<8]) == Self.signature else {
            throw VHDError.badSignature(path: path, what: "VHDX metadata region (expected 'metadata')")
        }
        let count = Int(try region.littleEndian(UInt16.self, at: 10))
        guard count <= 2047, 32 + count * 32 <= region.count else { throw corrupt("\(count) entries do not fit the table") }
        var items: [GUID: [UInt8]] = [:]
        for index in 0..<count {
            let base = 32 + index * 32
            let guid = GUID(bytes: try region.bytes(at: base, count: 16))
            let offset = Int(try region.littleEndian(UInt32.self, at: base + 16))
            let length = Int(try region.littleEndian(UInt32.self, at: base + 20))
            let flags = try region.littleEndian(UInt32.self, at: base + 24)
            let known = [Self.fileParametersGuid, Self.virtualDiskSizeGuid, Self.page83Guid, Self.logicalSectorSizeGuid,
                         Self.physicalSectorSizeGuid, Self.parentLocatorGuid].contains(guid)
            if !known {
                if flags & 4 != 0 { throw VHDError.unsupported(path: path, feature: "required VHDX metadata item \(guid.mixedEndianString)") }
                continue
            }
            guard length == 0 || (offset >= 65536 && offset + length <= region.count) else {
                throw corrupt("item \(guid.mixedEndianString) at \(offset) (\(length) bytes) lies outside the region")
            }
            // An empty item's offset means nothing (and may lie anywhere): it is not read.
            items[guid] = length == 0 ? [] : try region.bytes(at: offset, count: length)
        }
        func item(_ guid: GUID, _ name: String, size: Int) throws -> [UInt8] {
            guard let bytes = items[guid] else { throw corrupt("missing \(name)") }
            guard bytes.count >= size else { throw corrupt("\(name) is \(bytes.count) bytes, needs \(size)") }
            return bytes
        }
        let parameters = try item(Self.fileParametersGuid, "file parameters", size: 8)
        blockSize = try parameters.littleEndian(UInt32.self, at: 0)
        let bits = try parameters.littleEndian(UInt32.self, at: 4)
        leaveBlocksAllocated = bits & 1 != 0
        hasParent = bits & 2 != 0
        virtualSize = try item(Self.virtualDiskSizeGuid, "virtual disk size", size: 8).littleEndian(UInt64.self, at: 0)
        logicalSectorSize = try item(Self.logicalSectorSizeGuid, "logical sector size", size: 4).littleEndian(UInt32.self, at: 0)
        physicalSectorSize = try item(Self.physicalSectorSizeGuid, "physical sector size", size: 4).littleEndian(UInt32.self, at: 0)
        diskIdentifier = (try? item(Self.page83Guid, "page 83 data", size: 16)).map { GUID(bytes: Array($0.prefix(16))) } ?? .zero
        guard blockSize >= 1 << 20, blockSize <= 256 << 20, blockSize.nonzeroBitCount == 1 else {
            throw corrupt("block size \(blockSize) is not a power of two between 1 MiB and 256 MiB")
        }
        guard [512, 4096].contains(logicalSectorSize), [512, 4096].contains(physicalSectorSize) else {
            throw corrupt("sector sizes \(logicalSectorSize)/\(physicalSectorSize) must be 512 or 4096")
        }
        guard virtualSize > 0, virtualSize <= Self.maximumVirtualSize, virtualSize % UInt64(logicalSectorSize) == 0 else {
            throw corrupt("virtual size \(virtualSize) is not a multiple of \(logicalSectorSize) up to 64 TiB")
        }
        parentLocator = []
        if hasParent {
            let locator = try item(Self.parentLocatorGuid, "parent locator", size: 20)
            guard GUID(bytes: try locator.bytes(at: 0, count: 16)) == Self.vhdxLocatorType else {
                throw VHDError.unsupported(path: path, feature: "VHDX parent locator type other than VHDX")
            }
            let pairs = Int(try locator.littleEndian(UInt16.self, at: 18))
            for index in 0..<pairs {
                let base = 20 + index * 12
                do {
                    let keyOffset = Int(try locator.littleEndian(UInt32.self, at: base))
                    let valueOffset = Int(try locator.littleEndian(UInt32.self, at: base + 4))
                    let keyLength = Int(try locator.littleEndian(UInt16.self, at: base + 8))
                    let valueLength = Int(try locator.littleEndian(UInt16.self, at: base + 10))
                    let key = UTF16Text.decode(try locator.bytes(at: keyOffset, count: keyLength), bigEndian: false)
                    let value = UTF16Text.decode(try locator.bytes(at: valueOffset, count: valueLength), bigEndian: false)
                    parentLocator.append((key, value))
                } catch is FieldOutOfBounds {
                    throw corrupt("parent locator entry \(index) points outside the locator")
                }
            }
        }
    }

    /// Lays out the region: the table at its start, item data from 64 KiB on.
    func encoded(regionLength: Int) -> [UInt8] {
        var region = [UInt8](repeating: 0, count: regionLength)
        region.putBytes(Self.signature, at: 0)
        var parameters = [UInt8](repeating: 0, count: 8)
        parameters.putLittleEndian(blockSize, at: 0)
        parameters.putLittleEndian(UInt32((leaveBlocksAllocated ? 1 : 0) | (hasParent ? 2 : 0)), at: 4)
        var size = [UInt8](repeating: 0, count: 8)
        size.putLittleEndian(virtualSize, at: 0)
        var logical = [UInt8](repeating: 0, count: 4)
        logical.putLittleEndian(logicalSectorSize, at: 0)
        var physical = [UInt8](repeating: 0, count: 4)
        physical.putLittleEndian(physicalSectorSize, at: 0)
        // Flags: bit 1 IsVirtualDisk, bit 2 IsRequired.
        var items: [(GUID, [UInt8], UInt32)] = [
            (Self.fileParametersGuid, parameters, 4),
            (Self.virtualDiskSizeGuid, size, 6),
            (Self.page83Guid, diskIdentifier.bytes, 6),
            (Self.logicalSectorSizeGuid, logical, 6),
            (Self.physicalSectorSizeGuid, physical, 6),
        ]
        if hasParent { items.append((Self.parentLocatorGuid, encodedParentLocator(), 4)) }
        var dataOffset = 65536
        region.putLittleEndian(UInt16(items.count), at: 10)
        for (index, (guid, bytes, flags)) in items.enumerated() {
            let base = 32 + index * 32
            region.putBytes(guid.bytes, at: base)
            region.putLittleEndian(UInt32(dataOffset), at: base + 16)
            region.putLittleEndian(UInt32(bytes.count), at: base + 20)
            region.putLittleEndian(flags, at: base + 24)
            region.putBytes(bytes, at: dataOffset)
            dataOffset += bytes.count.roundedUp(toMultipleOf: 8)
        }
        return region
    }

    private func encodedParentLocator() -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 20 + parentLocator.count * 12)
        header.putBytes(Self.vhdxLocatorType.bytes, at: 0)
        header.putLittleEndian(UInt16(parentLocator.count), at: 18)
        var strings: [UInt8] = []
        for (index, pair) in parentLocator.enumerated() {
            let key = UTF16Text.encode(pair.key, bigEndian: false)
            let value = UTF16Text.encode(pair.value, bigEndian: false)
            let base = 20 + index * 12
            header.putLittleEndian(UInt32(header.count + strings.count), at: base)
            strings += key
            header.putLittleEndian(UInt32(header.count + strings.count), at: base + 4)
            strings += value
            header.putLittleEndian(UInt16(key.count), at: base + 8)
            header.putLittleEndian(UInt16(value.count), at: base + 10)
        }
        return header + strings
    }
}
