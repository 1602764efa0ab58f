import NIOCore

/// Splits the byte stream into frames and decodes them. An oversized or malformed frame is an error
/// that closes the connection (the handler after it sees `errorCaught`).
public struct WireDecoder: ByteToMessageDecoder {
    public typealias InboundOut = WireMessage
    public init() {}
    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length: UInt32 = buffer.getInteger(at: buffer.readerIndex) else { return .needMoreData }
        guard length >= 2, length <= WireFormat.maxFrame else { throw bad("frame length \(length) out of range") }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        var body = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(wrapInboundOut(try WireMessage.decode(&body)))
        return .continue
    }
}

public struct WireEncoder: MessageToByteEncoder {
    public typealias OutboundIn = WireMessage
    public init() {}
    public func encode(data: WireMessage, out: inout ByteBuffer) throws { data.encode(into: &out) }
}
