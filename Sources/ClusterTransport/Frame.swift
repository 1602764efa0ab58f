import NIOCore

/// One frame of the transport. Big endian:
///
/// | bytes | field |
/// | --- | --- |
/// | 4 | length of what follows (header, payload, tag) |
/// | 1 | version (`Transport.version`) |
/// | 1 | service (`ServiceID`; 0 is the transport's own handshake) |
/// | 1 | kind (`FrameKind`) |
/// | 1 | flags (0) |
/// | 8 | request id (0 for one-way frames) |
/// | 4 | timeout in milliseconds of a request (0: none) |
/// | n | payload (the service's message) |
/// | 32 | HMAC-SHA256 tag, after the handshake (`FrameProtection`) |
public struct Frame: Sendable {
    public var service: ServiceID
    public var kind: FrameKind
    public var requestID: UInt64
    public var timeoutMillis: UInt32
    public var payload: ByteBuffer

    public init(service: ServiceID, kind: FrameKind, requestID: UInt64 = 0, timeoutMillis: UInt32 = 0, payload: ByteBuffer) {
        self.service = service
        self.kind = kind
        self.requestID = requestID
        self.timeoutMillis = timeoutMillis
        self.payload = payload
    }

    /// Bytes of header after the length.
    public static let headerSize = 16

    /// Appends the frame to `out`, with its tag if `protection` is given (which then counts it).
    /// A frame over `Transport.maxFrame` is an error for the caller; nothing is written.
    public func encode(into out: inout ByteBuffer, protection: inout FrameProtection?) throws {
        let tagSize = protection == nil ? 0 : FrameProtection.tagSize
        let length = Self.headerSize + payload.readableBytes + tagSize
        guard length <= Transport.maxFrame else {
            throw TransportError.tooLarge("a frame of \(length) bytes exceeds the \(Transport.maxFrame)-byte limit")
        }
        let start = out.writerIndex
        out.reserveCapacity(minimumWritableBytes: 4 + length)
        out.writeInteger(UInt32(length))
        out.writeInteger(Transport.version)
        out.writeInteger(service.rawValue)
        out.writeInteger(kind.rawValue)
        out.writeInteger(UInt8(0))
        out.writeInteger(requestID)
        out.writeInteger(timeoutMillis)
        out.writeImmutableBuffer(payload)
        if protection != nil {
            let tag = out.withUnsafeReadableBytes { all in
                protection!.seal(UnsafeRawBufferPointer(rebasing: all[(start - out.readerIndex)...]))
            }
            tag.withUnsafeBytes { _ = out.writeBytes($0) }
        }
    }

    /// Cuts the next whole frame from `buffer`, if there is one. A length outside
    /// `minimum...maxFrame`, a failed tag, an unknown version or kind, or non-zero flags throw:
    /// the connection is then closed, so what follows is never read.
    public static func next(from buffer: inout ByteBuffer, maxFrame: Int, protection: inout FrameProtection?) throws -> Frame? {
        guard let length: UInt32 = buffer.getInteger(at: buffer.readerIndex) else { return nil }
        let tagSize = protection == nil ? 0 : FrameProtection.tagSize
        let minimum = headerSize + tagSize
        guard length >= minimum, length <= maxFrame else {
            throw TransportError.malformed("frame length \(length) out of range (\(minimum)...\(maxFrame))")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        if protection != nil {
            let signed = 4 + Int(length) - tagSize
            let valid = buffer.withUnsafeReadableBytes { all in
                protection!.verify(UnsafeRawBufferPointer(rebasing: all[..<signed]),
                                   tag: UnsafeRawBufferPointer(rebasing: all[signed..<(signed + tagSize)]))
            }
            guard valid else {
                throw TransportError.malformed("frame \(protection!.sequence) failed its integrity check (altered, injected, replayed or reordered)")
            }
        }
        buffer.moveReaderIndex(forwardBy: 4)
        var body = buffer.readSlice(length: Int(length))!
        let version: UInt8 = body.readInteger()!, service: UInt8 = body.readInteger()!
        let kind: UInt8 = body.readInteger()!, flags: UInt8 = body.readInteger()!
        let requestID: UInt64 = body.readInteger()!, timeout: UInt32 = body.readInteger()!
        guard version == Transport.version else { throw TransportError.malformed("unsupported transport version \(version)") }
        guard let k = FrameKind(rawValue: kind) else { throw TransportError.malformed("unknown frame kind \(kind)") }
        guard flags == 0 else { throw TransportError.malformed("unknown frame flags \(flags)") }
        let payload = body.readSlice(length: body.readableBytes - tagSize)!
        return Frame(service: ServiceID(rawValue: service), kind: k, requestID: requestID, timeoutMillis: timeout, payload: payload)
    }
}

public enum FrameKind: UInt8, Sendable {
    /// The transport's own: handshake and refusals (service 0).
    case control = 0
    /// A message that expects no reply.
    case oneWay = 1
    /// Expects one `response` or `failure` with the same request id.
    case request = 2
    case response = 3
    /// The serving side could not answer the request; the payload is UTF-8 text.
    case failure = 4
}
