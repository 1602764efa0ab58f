import Crypto
import Foundation

/// The integrity of one direction of a connection after the handshake: every frame's tag is
/// HMAC-SHA256, under this direction's key, of the frame's sequence number (counted from 0 by both
/// ends, never sent) and the whole frame before the tag. A frame injected, altered, replayed,
/// reordered or dropped on the way fails the next check.
public struct FrameProtection {
    public static let tagSize = 32
    private let key: SymmetricKey
    /// The sequence number of the next frame in this direction.
    public private(set) var sequence: UInt64 = 0

    public init(key: SymmetricKey) { self.key = key }

    /// The tag of the next frame, whose bytes (length to payload) are `frame`.
    mutating func seal(_ frame: UnsafeRawBufferPointer) -> [UInt8] {
        let tag = mac(frame)
        sequence += 1
        return tag
    }

    /// True if `tag` is the next frame's tag; only then is the frame counted.
    mutating func verify(_ frame: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer) -> Bool {
        let expected = mac(frame)
        guard ClusterSecret.equal(expected, Array(tag)) else { return false }
        sequence += 1
        return true
    }

    private func mac(_ frame: UnsafeRawBufferPointer) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: key)
        withUnsafeBytes(of: sequence.bigEndian) { hmac.update(data: $0) }
        hmac.update(data: frame)
        return Array(hmac.finalize())
    }
}
