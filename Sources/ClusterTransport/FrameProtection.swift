import Crypto
import Foundation

/// The integrity of one direction of a connection after the handshake: every frame's tag is
/// HMAC-SHA256, under this direction's key, of the frame's sequence number (counted from 0 by both
/// ends, never sent) and the whole frame before the tag. A frame injected, altered, replayed,
/// reordered or dropped on the way fails the next check.
public struct FrameProtection {
    public static let tagSize = 32
    /// The HMAC with the key already absorbed, copied for each frame (HMAC is a value type), so a
    /// frame does not pay for the key schedule.
    private let keyed: HMAC<SHA256>
    /// The sequence number of the next frame in this direction.
    public private(set) var sequence: UInt64 = 0

    public init(key: SymmetricKey) { keyed = HMAC<SHA256>(key: key) }

    /// The tag of the next frame, whose bytes (length to payload) are `frame`.
    mutating func seal(_ frame: UnsafeRawBufferPointer) -> HMAC<SHA256>.MAC {
        let tag = mac(frame)
        sequence += 1
        return tag
    }

    /// True if `tag` is the next frame's tag; only then is the frame counted.
    mutating func verify(_ frame: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer) -> Bool {
        let valid = mac(frame).withUnsafeBytes { expected in
            // Constant time, so timing does not leak the expected tag.
            expected.count == tag.count && zip(expected, tag).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
        }
        if valid { sequence += 1 }
        return valid
    }

    private func mac(_ frame: UnsafeRawBufferPointer) -> HMAC<SHA256>.MAC {
        var hmac = keyed
        withUnsafeBytes(of: sequence.bigEndian) { hmac.update(data: $0) }
        hmac.update(data: frame)
        return hmac.finalize()
    }
}
