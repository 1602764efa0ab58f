import NIOCore

/// Frames in, messages out, and back: the one codec of every DLM connection.
///
/// A plain (non-generic) duplex handler in this module rather than NIO's generic
/// `ByteToMessageHandler`/`MessageToByteHandler`: those run unspecialised across the module
/// boundary (runtime generic metadata, an extra pipeline step each way), which showed up as a
/// good part of the master's per-message work. An oversized or malformed frame is an error that
/// closes the connection (the handler after this one sees `errorCaught`); nothing after it is read.
public final class WireCodec: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = WireMessage
    public typealias OutboundIn = WireMessage
    public typealias OutboundOut = ByteBuffer

    /// Bytes received but not yet a whole frame.
    private var pending: ByteBuffer?
    private var broken = false
    /// The largest frame accepted. The master starts its connections at
    /// `WireFormat.maxFrameBeforeAuth` and raises it once the peer has authenticated, so an
    /// unauthenticated peer cannot make it buffer more than that.
    public var maxFrame: Int

    public init(maxFrame: Int = WireFormat.maxFrame) { self.maxFrame = maxFrame }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !broken else { return }
        var input = unwrapInboundIn(data)
        if pending == nil {
            pending = input
        } else {
            pending!.writeBuffer(&input)
        }
        do {
            while let msg = try Self.nextMessage(&pending!, maxFrame: maxFrame) {
                context.fireChannelRead(wrapInboundOut(msg))
                // A handler may have closed the connection while handling that message.
                if broken || pending == nil { return }
            }
        } catch {
            broken = true
            pending = nil
            context.fireErrorCaught(error)
            return
        }
        if pending!.readableBytes == 0 {
            pending = nil
        } else if pending!.readerIndex >= 4096 {
            pending!.discardReadBytes()
        }
    }

    /// Decodes the next whole frame of `buffer`, if there is one.
    public static func nextMessage(_ buffer: inout ByteBuffer, maxFrame: Int = WireFormat.maxFrame) throws -> WireMessage? {
        guard let length: UInt32 = buffer.getInteger(at: buffer.readerIndex) else { return nil }
        guard length >= 2, length <= maxFrame else { throw bad("frame length \(length) out of range (2...\(maxFrame))") }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        var body = buffer.readSlice(length: Int(length))!
        return try WireMessage.decode(&body)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        pending = nil
        context.fireChannelInactive()
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var out = context.channel.allocator.buffer(capacity: 64)
        do {
            try unwrapOutboundIn(data).encode(into: &out)
        } catch {
            // Nothing is sent; whoever wrote the message learns why through its promise.
            promise?.fail(error)
            return
        }
        context.write(wrapOutboundOut(out), promise: promise)
    }
}
