import NIOCore

/// The transport's own messages (service 0, kind `control`): the handshake, and a refusal that
/// says why a side closes the connection.
///
/// 1. server: `hello(server identity, server nonce)`
/// 2. client: `auth(client identity, client nonce, proof)`, the proof an HMAC with the secret over
///    both nonces and both identities
/// 3. server: `welcome(proof)`, its own proof over the same; from here on every frame both ways
///    carries a tag (`FrameProtection`) under keys derived from the same (`ClusterSecret.sessionKeys`).
/// Either side answers a bad proof, another volume, a limit or a broken frame with `refusal` and closes.
public enum ControlMessage: Equatable, Sendable {
    case hello(server: PeerIdentity, nonce: [UInt8])
    case auth(client: PeerIdentity, nonce: [UInt8], proof: [UInt8])
    case welcome(proof: [UInt8])
    case refusal(Refusal)

    public func encode() throws -> ByteBuffer {
        var b = ByteBuffer()
        switch self {
        case let .hello(server, nonce):
            b.writeInteger(UInt8(1)); try b.writeIdentity(server); b.writeBytes(nonce)
        case let .auth(client, nonce, proof):
            b.writeInteger(UInt8(2)); try b.writeIdentity(client); b.writeBytes(nonce); b.writeBytes(proof)
        case let .welcome(proof):
            b.writeInteger(UInt8(3)); b.writeBytes(proof)
        case let .refusal(r):
            b.writeInteger(UInt8(4)); b.writeInteger(r.reason.rawValue)
            // Cut at a character, so what is shown is what was meant.
            var text = ""
            for c in r.text {
                if text.utf8.count + c.utf8.count > Self.maxRefusalText { break }
                text.append(c)
            }
            b.writeString(text)
        }
        return b
    }

    /// Refusal texts are cut to this many bytes (at most one frame before authentication).
    static let maxRefusalText = 200

    public static func decode(_ buffer: ByteBuffer) throws -> ControlMessage {
        var b = buffer
        guard let type: UInt8 = b.readInteger() else { throw TransportError.malformed("empty control message") }
        let msg: ControlMessage
        switch type {
        case 1: msg = .hello(server: try b.readIdentity(), nonce: try b.readFixed(32))
        case 2: msg = .auth(client: try b.readIdentity(), nonce: try b.readFixed(32), proof: try b.readFixed(32))
        case 3: msg = .welcome(proof: try b.readFixed(32))
        case 4:
            guard let raw: UInt8 = b.readInteger(), let reason = Refusal.Reason(rawValue: raw) else {
                throw TransportError.malformed("bad refusal reason")
            }
            // Cut at any byte by a sender's limit: decoded leniently, it is only shown.
            msg = .refusal(Refusal(reason, String(decoding: b.readBytes(length: b.readableBytes)!, as: UTF8.self)))
        default: throw TransportError.malformed("unknown control message \(type)")
        }
        guard b.readableBytes == 0 else { throw TransportError.malformed("trailing bytes in control message \(type)") }
        return msg
    }
}

/// Why a side closes a connection, as it tells the other.
public struct Refusal: Equatable, Sendable, CustomStringConvertible {
    public enum Reason: UInt8, Sendable {
        case authentication = 1, volume = 2, limit = 3, protocolError = 4, handshakeTimeout = 5, closing = 6
    }
    public var reason: Reason
    public var text: String
    public init(_ reason: Reason, _ text: String) {
        self.reason = reason
        self.text = text
    }
    public var description: String { text }

    /// The error a side reports when the other refuses it.
    var error: TransportError {
        switch reason {
        case .authentication: .authenticationFailed(text)
        case .volume: .wrongVolume(text)
        default: .refused(text)
        }
    }
}

extension ByteBuffer {
    mutating func writeIdentity(_ id: PeerIdentity) throws {
        let volume = Array(id.volume.utf8)
        guard volume.count <= Transport.maxVolumeID else {
            throw TransportError.tooLarge("volume id of \(volume.count) bytes (limit \(Transport.maxVolumeID))")
        }
        writeInteger(id.node)
        writeInteger(UInt8(volume.count))
        writeBytes(volume)
    }
    mutating func readIdentity() throws -> PeerIdentity {
        guard let node: UInt32 = readInteger(), let n: UInt8 = readInteger() else { throw TransportError.malformed("truncated identity") }
        guard n <= Transport.maxVolumeID, let bytes = readBytes(length: Int(n)),
              let volume = String(validating: bytes, as: UTF8.self) else { throw TransportError.malformed("bad volume id") }
        return PeerIdentity(node: node, volume: volume)
    }
    mutating func readFixed(_ n: Int) throws -> [UInt8] {
        guard let b = readBytes(length: n) else { throw TransportError.malformed("truncated handshake field") }
        return b
    }
}
