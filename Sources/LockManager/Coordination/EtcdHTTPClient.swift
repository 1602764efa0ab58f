import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The few HTTP/1.1 calls the etcd backend makes of etcd's v3 JSON gateway, on swift-nio.
///
/// Not URLSession: FoundationNetworking on Linux traps the whole process ("Transfer completed, but
/// there's no response", swift-corelibs-foundation #5285) when etcd drops a connection, and a
/// filesystem daemon must outlive any peer. Here a refused or closed connection, a timeout, a non-2xx
/// status or a malformed reply is a thrown `CoordinationError` that says which.
///
/// One connection per call: the calls are few (a renewal every TTL/4, the odd campaign or read), and
/// a fresh connection can never be one the server is closing while we reuse it.
struct EtcdHTTPClient: Sendable {
    let host: String
    let port: Int
    /// The endpoint's own path, if any, before `v3/...`.
    let basePath: String
    let group: any EventLoopGroup
    /// The bound on a whole call, connect to last byte (the old per-request limit: 1 s).
    let timeout: TimeAmount
    /// A larger reply is refused rather than buffered without end.
    static let maxReply = 16 << 20

    /// - Parameter endpoint: like `http://127.0.0.1:2379` (no TLS: the gateway is reached in the clear).
    init(endpoint: String, timeout: TimeAmount = .seconds(1), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        guard let c = URLComponents(string: endpoint), c.scheme?.lowercased() == "http", var host = c.host, !host.isEmpty else {
            throw CoordinationError("bad etcd endpoint \(endpoint): expected http://host:port")
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host
        port = c.port ?? 80
        basePath = c.path.hasSuffix("/") ? String(c.path.dropLast()) : c.path
        self.group = group
        self.timeout = timeout
    }

    var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// POSTs `body` as JSON to `path` (like `v3/kv/range`) and returns the reply's JSON object;
    /// the gateway's `{"error": ...}` is thrown, its `{"result": {...}}` unwrapped.
    func call(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
        let reply = try await post(path, try JSONSerialization.data(withJSONObject: body))
        guard let obj = try? JSONSerialization.jsonObject(with: reply) as? [String: Any] else {
            throw CoordinationError("etcd \(path): the reply is not a JSON object: \(Self.excerpt(reply))")
        }
        if let err = obj["error"] { throw CoordinationError("etcd \(path): \(err)") }
        return (obj["result"] as? [String: Any]) ?? obj
    }

    /// One request, the whole 2xx reply body.
    func post(_ path: String, _ payload: Data) async throws -> Data {
        let what = "etcd \(path) at \(authority)"
        let loop = group.next()
        let reply = loop.makePromise(of: Data.self)
        let timeout = self.timeout
        let timer = loop.scheduleTask(in: timeout) { reply.fail(CoordinationError("\(what): no complete reply within \(Self.text(timeout))")) }
        reply.futureResult.whenComplete { _ in timer.cancel() }
        connect(loop, EtcdExchange(what, request(path, payload), .whole(reply))) { result in
            switch result {
            // Whichever way the call ends (reply, error, timeout, cancellation), the connection goes.
            case .success(let channel): reply.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure(let error): reply.fail(CoordinationError("\(what): cannot connect: \(error)"))
            }
        }
        return try await withTaskCancellationHandler {
            try await reply.futureResult.get()
        } onCancel: {
            reply.fail(CancellationError())
        }
    }

    /// POSTs `body` as JSON to `path` and yields each line of the reply as it comes (`/v3/watch`
    /// streams one JSON object a line for as long as the watch lasts). The connection and a 2xx
    /// status line must come within `timeout` (the client's by default); then there is no idle limit (a watch is quiet while
    /// nothing changes): the stream ends, always with an error, when the connection does. Ending the
    /// iteration (break, cancellation) closes the connection.
    func lines(_ path: String, _ body: [String: Any], timeout: TimeAmount? = nil) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let payload: Data
        do { payload = try JSONSerialization.data(withJSONObject: body) } catch {
            continuation.finish(throwing: error)
            return stream
        }
        let what = "etcd \(path) at \(authority)"
        let loop = group.next()
        let head = loop.makePromise(of: Void.self)
        let timeout = timeout ?? self.timeout
        let timer = loop.scheduleTask(in: timeout) { head.fail(CoordinationError("\(what): no reply within \(Self.text(timeout))")) }
        head.futureResult.whenComplete { _ in timer.cancel() }
        head.futureResult.whenFailure { continuation.finish(throwing: $0) }
        // The consumer may stop before the connection exists: whichever comes second closes it.
        let link = Locked(StreamLink())
        continuation.onTermination = { _ in
            timer.cancel()
            link.withLock { l -> Channel? in
                l.ended = true
                return l.channel
            }?.close(promise: nil)
        }
        connect(loop, EtcdExchange(what, request(path, payload), .lines(continuation, head: head))) { result in
            switch result {
            case .success(let channel):
                let ended = link.withLock { l -> Bool in
                    l.channel = channel
                    return l.ended
                }
                if ended { channel.close(promise: nil) }
                head.futureResult.whenFailure { _ in channel.close(promise: nil) }
            case .failure(let error): head.fail(CoordinationError("\(what): cannot connect: \(error)"))
            }
        }
        return stream
    }

    private struct StreamLink {
        var channel: Channel?
        var ended = false
    }

    private func connect(_ loop: any EventLoop, _ exchange: @autoclosure @escaping @Sendable () -> EtcdExchange,
                         then: @escaping @Sendable (Result<Channel, Error>) -> Void) {
        ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(exchange())
                }
            }
            .connect(host: host, port: port)
            .whenComplete(then)
    }

    private func request(_ path: String, _ payload: Data) -> EtcdExchange.Request {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: authority)
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(payload.count)")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "\(basePath)/\(path)", headers: headers)
        return EtcdExchange.Request(head: head, body: ByteBuffer(bytes: payload))
    }

    static func text(_ t: TimeAmount) -> String { String(format: "%.1f s", Double(t.nanoseconds) / 1e9) }

    /// The start of a reply, for an error message.
    static func excerpt(_ d: Data) -> String {
        let s = String(decoding: d.prefix(300), as: UTF8.self)
        return d.count > 300 ? s + "…" : s
    }
}

/// One request and its reply on a connection of its own. Lives on the connection's event loop
/// (NIO calls it only there), so its state needs no lock. Every way the exchange can end completes
/// the sink exactly once, with the reply or with an error that says what happened.
final class EtcdExchange: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    struct Request {
        var head: HTTPRequestHead
        var body: ByteBuffer
    }

    enum Sink {
        /// The whole body of a 2xx reply.
        case whole(EventLoopPromise<Data>)
        /// Each non-blank line of a 2xx body as it arrives; `head` succeeds on the 2xx status line.
        case lines(AsyncThrowingStream<Data, Error>.Continuation, head: EventLoopPromise<Void>)
    }

    let what: String
    let request: Request
    let sink: Sink
    var status: HTTPResponseStatus?
    /// The whole body so far, or (streaming a 2xx body) the start of a line not ended yet.
    var body = ByteBuffer()
    var received = 0
    var done = false

    init(_ what: String, _ request: Request, _ sink: Sink) {
        self.what = what
        self.request = request
        self.sink = sink
    }

    var ok: Bool { status.map { (200..<300).contains($0.code) } ?? false }
    var streaming: Bool { if case .lines = sink { true } else { false } }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(request.body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            // 1xx heads (none expected: we send no Expect) are not the answer.
            guard h.status.code >= 200 else { return }
            status = h.status
            if ok, case .lines(_, let head) = sink { head.succeed() }
        case .body(var chunk):
            received += chunk.readableBytes
            body.writeBuffer(&chunk)
            if ok, case .lines(let c, _) = sink { emitLines(c) }
            // Only what is held counts: a watch may stream for ever, a line or a reply may not grow so.
            if body.readableBytes > EtcdHTTPClient.maxReply {
                fail(context, "the reply exceeds \(EtcdHTTPClient.maxReply) bytes without end")
            }
        case .end:
            finish(context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            if status == nil {
                fail(context, "the connection closed before any reply")
            } else if ok && streaming {
                fail(context, "the stream's connection closed")
            } else {
                fail(context, "the connection closed in the middle of the reply (HTTP \(status!.code), \(received) bytes of body)")
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !done else { return }
        // The decoder's name for a connection that closed inside a reply: say so plainly.
        if let e = error as? HTTPParserError, e == .invalidEOFState {
            fail(context, status == nil ? "the connection closed in the middle of the reply's head"
                : "the connection closed in the middle of the reply (HTTP \(status!.code), \(received) bytes of body)")
        } else if error is HTTPParserError {
            fail(context, "malformed HTTP reply: \(error)")
        } else {
            fail(context, "connection failed: \(error)")
        }
    }

    private func emitLines(_ c: AsyncThrowingStream<Data, Error>.Continuation) {
        while true {
            let view = body.readableBytesView
            guard let nl = view.firstIndex(of: UInt8(ascii: "\n")) else { break }
            let line = body.readBytes(length: view.distance(from: view.startIndex, to: nl)) ?? []
            body.moveReaderIndex(forwardBy: 1)
            if !Self.blank(line) { c.yield(Data(line)) }
        }
        body.discardReadBytes()
    }

    static func blank(_ line: [UInt8]) -> Bool { line.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") } }

    private func finish(_ context: ChannelHandlerContext) {
        guard ok else {
            let text = body.readString(length: min(body.readableBytes, 300)) ?? ""
            return fail(context, "HTTP \(status.map { "\($0.code)" } ?? "?") \(text)")
        }
        done = true
        switch sink {
        case .whole(let p):
            p.succeed(Data(body.readableBytesView))
        case .lines(let c, _):
            let rest = body.readBytes(length: body.readableBytes) ?? []
            if !Self.blank(rest) { c.yield(Data(rest)) }
            c.finish(throwing: CoordinationError("\(what): the stream ended"))
        }
        context.close(promise: nil)
    }

    private func fail(_ context: ChannelHandlerContext, _ why: String) {
        done = true
        let error = CoordinationError("\(what): \(why)")
        switch sink {
        case .whole(let p):
            p.fail(error)
        case .lines(let c, let head):
            head.fail(error)
            c.finish(throwing: error)
        }
        context.close(promise: nil)
    }
}
