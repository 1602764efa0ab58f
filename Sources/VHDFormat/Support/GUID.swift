import Foundation

/// A 16-byte identifier as stored on disk. VHD stores UUIDs in RFC byte order; VHDX stores GUIDs
/// in Microsoft's mixed-endian order (first three fields little-endian).
public struct GUID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        self.bytes = bytes.count == 16 ? bytes : Array((bytes + Array(repeating: 0, count: 16)).prefix(16))
    }

    public static let zero = GUID(bytes: Array(repeating: 0, count: 16))

    public static func random() -> GUID {
        let uuid = UUID().uuid
        return GUID(bytes: [uuid.0, uuid.1, uuid.2, uuid.3, uuid.4, uuid.5, uuid.6, uuid.7,
                            uuid.8, uuid.9, uuid.10, uuid.11, uuid.12, uuid.13, uuid.14, uuid.15])
    }

    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// RFC order, as VHD stores it.
    public var description: String { Self.format(bytes) }

    /// Microsoft order, as VHDX stores it.
    public var mixedEndianString: String {
        Self.format([bytes[3], bytes[2], bytes[1], bytes[0], bytes[5], bytes[4], bytes[7], bytes[6]] + bytes[8..<16])
    }

    /// Parses "{xxxxxxxx-xxxx-...}" (braces optional) into the Microsoft on-disk order.
    public init?(mixedEndianString text: String) {
        let hex = text.filter { $0.isHexDigit }
        guard hex.count == 32, text.filter({ $0 == "-" }).count <= 4 else { return nil }
        var rfc: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            rfc.append(byte)
            index = next
        }
        self.init(bytes: [rfc[3], rfc[2], rfc[1], rfc[0], rfc[5], rfc[4], rfc[7], rfc[6]] + rfc[8..<16])
    }

    private static func format(_ b: [UInt8]) -> String {
        let hex = b.map { String(format: "%02x", $0) }.joined()
        let chars = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(chars[$0]) }.joined(separator: "-")
    }
}
