import NIOCore

/// Bytes in, frames out, and back: the first handler of every transport connection. It checks and
/// adds the tags once the handshake has installed `FrameProtection` for each direction.
///
/// A plain (non-generic) duplex handler rather than NIO's `ByteToMessageHandler`: that runs
/// unspecialised across the module boundary, a measurable part of a DLM round trip. A frame that
/// is too long, fails its tag or breaks the format is an error (the next handler sees
/// `errorCaught` and closes the connection); nothing after it is read.
final class FrameCodec: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Frame
    typealias OutboundIn = Frame
    typealias OutboundOut = ByteBuffer

    private var pending: ByteBuffer?
    private var broken = false
    /// The largest frame accepted: `Transport.maxFrameBeforeAuth` until the handshake raises it.
    var maxFrame = Transport.maxFrameBeforeAuth
    private var inbound: FrameProtection?
    private var outbound: FrameProtection?

    /// From now on every frame is tagged, both ways (the handshake's last frames were not).
    func protect(inbound: FrameProtection, outbound: FrameProtection) {
        self.inbound = inbound
        self.outbound = outbound
        maxFrame = Transport.maxFrame
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !broken else { return }
        var input = unwrapInboundIn(data)
        if pending == nil {
            pending = input
        } else {
            pending!.writeBuffer(&input)
        }
        do {
            while let frame = try Frame.next(from: &pending!, maxFrame: maxFrame, protection: &inbound) {
                context.fireChannelRead(wrapInboundOut(frame))
                // A handler may have closed the connection while handling that frame.
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

    func channelInactive(context: ChannelHandlerContext) {
        pending = nil
        broken = true
        context.fireChannelInactive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        var out = context.channel.allocator.buffer(capacity: 4 + Frame.headerSize + frame.payload.readableBytes + FrameProtection.tagSize)
        do {
            try frame.encode(into: &out, protection: &outbound)
        } catch {
            // Nothing is sent (and nothing counted); whoever wrote the frame learns why.
            promise?.fail(error)
            return
        }
        context.write(wrapOutboundOut(out), promise: promise)
    }
}
