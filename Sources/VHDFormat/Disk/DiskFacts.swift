/// The container format, detected from the content, never from the file name.
public enum ImageFormat: String, Sendable, Codable, CaseIterable {
    case vhd, vhdx, raw
}

public enum DiskType: String, Sendable, Codable {
    case fixed, dynamic, differencing
}

/// Where a differencing image says its parent lives. `kind` is the format's own name for the entry
/// (VHD platform codes such as W2ru, VHDX keys such as relative_path).
public struct ParentLocator: Sendable, Codable, Equatable {
    public var kind: String
    public var path: String
}

/// What a differencing image records about its parent: the identity the parent must have
/// (VHD parent unique id, VHDX parent_linkage) and where to look for it.
public struct ParentLink: Sendable, Codable, Equatable {
    public var identity: String
    public var name: String?
    public var timestamp: UInt32?
    public var locators: [ParentLocator]
}

public struct CHSGeometry: Sendable, Codable, Equatable {
    public var cylinders: UInt16
    public var heads: UInt8
    public var sectorsPerTrack: UInt8
    public var byteCount: UInt64 { UInt64(cylinders) * UInt64(heads) * UInt64(sectorsPerTrack) * 512 }
}

/// Facts about one image file, as `vhdtool info` shows them and CSVFS exposes them as `user.vhd.*`.
public struct DiskFacts: Sendable, Codable, Equatable {
    public var path: String
    public var format: ImageFormat
    public var type: DiskType
    /// The size the guest sees, by the rule Hyper-V uses (and the CHS rule for Virtual PC images).
    public var virtualSize: UInt64
    public var blockSize: UInt64
    public var logicalSectorSize: UInt32
    public var physicalSectorSize: UInt32
    public var creator: String
    /// VHD: the footer's unique id. VHDX: the DataWriteGuid, which children record as parent_linkage.
    public var identity: String
    public var fileWriteIdentifier: String?
    public var diskIdentifier: String?
    public var geometry: CHSGeometry?
    public var fileSize: UInt64
    public var parent: ParentLink?
    /// VHDX: a log was found and replayed (in memory when opened read-only).
    public var logReplayed: Bool
}
