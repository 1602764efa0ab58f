import NIOCore

/// One authenticated connection, as services use it. Safe to call from any thread; what it
/// changes lives on the connection's event loop.
public final class TransportConnection: Sendable {
    /// Who the other side proved to be.
    public let peer: PeerIdentity
    public let channel: Channel
    let handler: NIOLoopBound<ConnectionHandler>

    init(peer: PeerIdentity, channel: Channel, handler: NIOLoopBound<ConnectionHandler>) {
        self.peer = peer
        self.channel = channel
        self.handler = handler
    }

    public var eventLoop: EventLoop { channel.eventLoop }
    /// The peer's IP address, for log lines.
    public var remoteAddress: String { channel.remoteAddress?.ipAddress ?? "unknown" }

    /// Sends a one-way message; `flush: false` leaves it for the next `flush()` (batching).
    public func send(_ service: ServiceID, _ payload: ByteBuffer, flush: Bool = true) {
        write(Frame(service: service, kind: .oneWay, payload: payload), flush: flush)
    }

    /// Sends a request and waits for its reply, at most `timeout`: then it fails with
    /// `TransportError.timedOut`, and a reply that comes later is dropped.
    public func request(_ service: ServiceID, _ payload: ByteBuffer, timeout: Duration) -> EventLoopFuture<ByteBuffer> {
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        let nanos = max(Int64(1_000_000), timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        onLoop { $0.request(service, payload, timeoutNanos: nanos, promise: promise) }
        return promise.futureResult
    }

    public func request(_ service: ServiceID, _ payload: ByteBuffer, timeout: Duration) async throws -> ByteBuffer {
        try await request(service, payload, timeout: timeout).get()
    }

    /// Answers a request (`message.requestID`); ignored for a one-way message. A reply too large
    /// for a frame is answered with a failure that says so.
    public func respond(to message: InboundMessage, with payload: ByteBuffer, flush: Bool = true) {
        guard let id = message.requestID else { return }
        let length = Frame.headerSize + payload.readableBytes + FrameProtection.tagSize
        guard length <= Transport.maxFrame else {
            return fail(message, "a reply of \(payload.readableBytes) bytes exceeds the \(Transport.maxFrame)-byte frame limit", flush: flush)
        }
        write(Frame(service: message.service, kind: .response, requestID: id, payload: payload), flush: flush)
    }

    /// Answers a request with an error: the requester gets `TransportError.remote(text)`.
    public func fail(_ message: InboundMessage, _ text: String, flush: Bool = true) {
        guard let id = message.requestID else { return }
        write(Frame(service: message.service, kind: .failure, requestID: id, payload: ByteBuffer(string: text)), flush: flush)
    }

    public func flush() { channel.flush() }

    /// Closes the connection; with a reason, the other side is told it first.
    public func close(_ refusal: Refusal? = nil) {
        onLoop { $0.closeConnection(refusal) }
    }

    /// Replies that came after their request's deadline and were dropped (for tests and status).
    public func droppedReplies() async throws -> Int {
        try await eventLoop.submit { [handler] in handler.value.droppedReplies }.get()
    }

    /// Requests waiting for their reply.
    public func outstandingRequests() async throws -> Int {
        try await eventLoop.submit { [handler] in handler.value.outstanding }.get()
    }

    private func write(_ frame: Frame, flush: Bool) {
        if flush { channel.writeAndFlush(frame, promise: nil) } else { channel.write(frame, promise: nil) }
    }

    private func onLoop(_ body: @escaping @Sendable (ConnectionHandler) -> Void) {
        if eventLoop.inEventLoop {
            body(handler.value)
        } else {
            eventLoop.execute { [handler] in body(handler.value) }
        }
    }
}
