import CSVFS
import Foundation
import Glibc

/// What a node tells the admin about itself (`csvfs status`): written by the node into its own slot of the
/// volume's coordination range when it joins, cleared when it leaves. Whether it is alive is not in the
/// record: the coordination backend knows (a dead node's record stays, marked not alive).
///
/// Layout: the `local` backend uses the range's first 4353 bytes; slots of 224 bytes follow from 8192, one per
/// node id (1-256), so all 256 end at 64 KiB, the range `csvfs format` reserves. A slot: magic "CSVN",
/// node u32, joined at (ns since 1970) u64, pid u32, then address, host and mountpoint, each a length
/// byte and UTF-8 (at most 63, 63 and 75 bytes; longer ones are cut).
public struct NodeRecord: Sendable, Equatable, Codable {
    public var node: UInt32
    public var joinedAt: Date
    public var pid: Int32
    public var address: String
    public var host: String
    public var mountpoint: String

    static let slotsOffset: Int64 = 8192
    static let slotSize = 224
    static let magic = Array("CSVN".utf8)
    private static let fieldLimits = [63, 63, 75]

    public init(node: UInt32, joinedAt: Date, pid: Int32, address: String, host: String, mountpoint: String) {
        self.node = node
        self.joinedAt = joinedAt
        self.pid = pid
        self.address = address
        self.host = host
        self.mountpoint = mountpoint
    }

    static func slot(of node: UInt32, in superblock: Superblock) -> Int64? {
        let offset = slotsOffset + Int64(node - 1) * Int64(slotSize)
        guard node >= 1, offset + Int64(slotSize) <= superblock.coordinationLength else { return nil }
        return superblock.coordinationOffset + offset
    }

    func encoded() -> [UInt8] {
        var bytes = Self.magic
        withUnsafeBytes(of: node.bigEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt64(max(0, joinedAt.timeIntervalSince1970 * 1e9)).bigEndian) { bytes += $0 }
        withUnsafeBytes(of: pid.bigEndian) { bytes += $0 }
        for (text, limit) in zip([address, host, mountpoint], Self.fieldLimits) {
            var field = Array(text.utf8.prefix(limit))
            // Cut at a character boundary, so what is kept still reads as UTF-8.
            while String(validating: field, as: UTF8.self) == nil { field.removeLast() }
            bytes.append(UInt8(field.count))
            bytes += field
        }
        return bytes + [UInt8](repeating: 0, count: Self.slotSize - bytes.count)
    }

    static func decode(_ bytes: [UInt8]) -> NodeRecord? {
        guard bytes.count == slotSize, Array(bytes[0..<4]) == magic else { return nil }
        func integer(_ range: Range<Int>) -> UInt64 { bytes[range].reduce(0) { $0 << 8 | UInt64($1) } }
        var cursor = 20
        var fields: [String] = []
        for limit in fieldLimits {
            let length = Int(bytes[cursor])
            guard length <= limit, let text = String(validating: bytes[(cursor + 1)..<(cursor + 1 + length)], as: UTF8.self) else { return nil }
            fields.append(text)
            cursor += 1 + length
        }
        return NodeRecord(node: UInt32(integer(4..<8)), joinedAt: Date(timeIntervalSince1970: Double(integer(8..<16)) / 1e9),
                          pid: Int32(bitPattern: UInt32(integer(16..<20))), address: fields[0], host: fields[1], mountpoint: fields[2])
    }

    /// Writes this record into its node's slot of the volume on `device`.
    func write(to device: LUNDevice, superblock: Superblock) throws {
        guard let offset = Self.slot(of: node, in: superblock) else { throw JoinError("the volume's coordination range has no slot for node \(node)") }
        try device.fd.write(encoded(), at: offset)
    }

    static func clear(node: UInt32, on device: LUNDevice, superblock: Superblock) {
        guard let offset = slot(of: node, in: superblock) else { return }
        try? device.fd.write([UInt8](repeating: 0, count: slotSize), at: offset)
    }

    /// Every record the volume on `device` holds, by node id.
    public static func all(on device: LUNDevice, superblock: Superblock) -> [UInt32: NodeRecord] {
        var records: [UInt32: NodeRecord] = [:]
        let count = Int((superblock.coordinationLength - slotsOffset) / Int64(slotSize))
        guard count > 0, let bytes = try? device.fd.read(count: count * slotSize, at: superblock.coordinationOffset + slotsOffset) else {
            return records
        }
        for index in 0..<min(count, bytes.count / slotSize) {
            if let record = decode(Array(bytes[(index * slotSize)..<((index + 1) * slotSize)])), record.node == UInt32(index + 1) {
                records[record.node] = record
            }
        }
        return records
    }
}
