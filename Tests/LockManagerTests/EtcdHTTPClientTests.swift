import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import LockManager
import TestSupport
import ClusterTestSupport

/// Why the etcd backend has its own HTTP client: FoundationNetworking trapped the whole process
/// when etcd dropped a connection. Against a loopback server that answers wrongly in every way we
/// could think of, each call throws an error that says what happened, within its timeout, and the
/// process (this test runner) lives on. And a watch on a real etcd delivers a put.
@Suite(.serialized) struct EtcdHTTPClientTests {
    /// The error `work` throws, as text; fails the test if it returns instead.
    static func failure(_ work: () async throws -> Void) async -> String {
        do {
            try await work()
            Issue.record("expected an error")
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test(.timeLimit(.minutes(1))) func aConnectionClosedWithoutAnAnswerIsAnError() async throws {
        let server = try await BadHTTPServer(.hangUp)
        let client = try EtcdHTTPClient(endpoint: server.endpoint)
        let text = await Self.failure { _ = try await client.call("v3/kv/range", ["key": "eA=="]) }
        #expect(text.contains("closed before any reply"), "\(text)")
        // The case that trapped: a whole backend against it fails its start, it does not crash.
        let coordination = try EtcdCoordination(endpoint: server.endpoint, volume: "gone", node: 1)
        let start = await Self.failure { try await coordination.start(address: "127.0.0.1:1") }
        #expect(start.contains("v3/lease/grant"), "\(start)")
        await coordination.stop()
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func garbageIsAMalformedReply() async throws {
        let server = try await BadHTTPServer(.garbage)
        let text = await Self.failure { _ = try await EtcdHTTPClient(endpoint: server.endpoint).call("v3/kv/range", [:]) }
        #expect(text.contains("malformed HTTP reply"), "\(text)")
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func aServerErrorIsThrownWithItsBody() async throws {
        let server = try await BadHTTPServer(.status500)
        let text = await Self.failure { _ = try await EtcdHTTPClient(endpoint: server.endpoint).call("v3/kv/range", [:]) }
        #expect(text.contains("HTTP 500 etcd is unwell"), "\(text)")
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func aBodyThatIsNotJSONIsAnError() async throws {
        let server = try await BadHTTPServer(.notJSON)
        let text = await Self.failure { _ = try await EtcdHTTPClient(endpoint: server.endpoint).call("v3/kv/range", [:]) }
        #expect(text.contains("not a JSON object: not json"), "\(text)")
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func aSilentServerTimesOut() async throws {
        let server = try await BadHTTPServer(.silent)
        let client = try EtcdHTTPClient(endpoint: server.endpoint, timeout: .milliseconds(300))
        let began = Date()
        let text = await Self.failure { _ = try await client.call("v3/kv/range", [:]) }
        #expect(text.contains("no complete reply within 0.3 s"), "\(text)")
        #expect(Date().timeIntervalSince(began) < 5)
        // And the connection the client gave up on is closed, not leaked.
        try await eventually("the server to see the connection close", timeout: 5) { server.closed.withLock { $0 } == 1 }
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func nobodyListeningIsAnError() async throws {
        let port = try freeLoopbackPort()
        let text = await Self.failure { _ = try await EtcdHTTPClient(endpoint: "http://127.0.0.1:\(port)").call("v3/kv/range", [:]) }
        #expect(text.contains("cannot connect"), "\(text)")
    }

    @Test func aBadEndpointIsRefusedUpFront() {
        #expect(throws: CoordinationError.self) { try EtcdHTTPClient(endpoint: "127.0.0.1:2379") }
        #expect(throws: CoordinationError.self) { try EtcdCoordination(endpoint: "https://127.0.0.1:2379", volume: "v", node: 1) }
    }

    /// A watch whose connection drops delivers what came before, then ends with an error (the
    /// watch loop's cue to resume), not a trap and not a silent end.
    @Test(.timeLimit(.minutes(1))) func aWatchWhoseConnectionDropsEndsWithAnError() async throws {
        let server = try await BadHTTPServer(.oneLineThenHangUp)
        let client = try EtcdHTTPClient(endpoint: server.endpoint)
        let (lines, text) = try await within(seconds: 10) { () -> ([String], String) in
            var lines: [String] = []
            let text = await Self.failure {
                for try await line in client.lines("v3/watch", [:]) { lines.append(String(decoding: line, as: UTF8.self)) }
            }
            return (lines, text)
        }
        #expect(lines == [#"{"result":{"created":true}}"#])
        #expect(text.contains("connection closed"), "\(text)")
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func aWatchRefusedWithAStatusIsAnError() async throws {
        let server = try await BadHTTPServer(.status500)
        let client = try EtcdHTTPClient(endpoint: server.endpoint)
        let text = try await within(seconds: 10) {
            await Self.failure { for try await _ in client.lines("v3/watch", [:]) {} }
        }
        #expect(text.contains("HTTP 500 etcd is unwell"), "\(text)")
        await server.stop()
    }

    /// Leaving a watch's loop (as the watch loop does on a cancelled watch) closes its connection.
    @Test(.timeLimit(.minutes(1))) func leavingAWatchClosesItsConnection() async throws {
        let server = try await BadHTTPServer(.oneLineThenWait)
        let client = try EtcdHTTPClient(endpoint: server.endpoint)
        let first = try await within(seconds: 10) { () -> String? in
            for try await line in client.lines("v3/watch", [:]) { return String(decoding: line, as: UTF8.self) }
            return nil
        }
        #expect(first == #"{"result":{"created":true}}"#)
        try await eventually("the server to see the watch's connection close", timeout: 5) { server.closed.withLock { $0 } == 1 }
        await server.stop()
    }

    /// The real thing: a watch on a prefix of a real etcd reports a put under it.
    @Test(.timeLimit(.minutes(2))) func aWatchOnARealEtcdDeliversAPut() async throws {
        let etcd = try await EtcdServer()
        defer { etcd.stop() }
        let client = try EtcdHTTPClient(endpoint: etcd.endpoint)
        let created = Locked(false)
        let watcher = Task { () throws -> EtcdKeyChange? in
            for try await r in EtcdWatch.open(client, key: "/t/", rangeEnd: "/t0", startRevision: 1) {
                if r.created { created.withLock { $0 = true } }
                if let c = r.changes.first { return c }
            }
            return nil
        }
        defer { watcher.cancel() }
        try await eventually("the watch to be created", timeout: 10) { created.withLock { $0 } }
        let put = try await client.call("v3/kv/put", ["key": EtcdCoordination.b64("/t/a"), "value": EtcdCoordination.b64("one")])
        let revision = EtcdCoordination.int((put["header"] as? [String: Any])?["revision"])
        let change = try await within(seconds: 10) { try await watcher.value }
        #expect(change?.key == "/t/a")
        #expect(change?.value == "one")
        #expect(change?.deleted == false)
        #expect(change.map { $0.modRevision } == revision)
    }
}

/// Runs `work`, failing with a clear error if it takes longer than `seconds` (and cancelling it).
func within<T: Sendable>(seconds: Double, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { g in
        g.addTask { try await work() }
        g.addTask { try await Task.sleep(nanoseconds: UInt64(seconds * 1e9)); return nil }
        defer { g.cancelAll() }
        guard let first = try await g.next(), let value = first else { throw ModelFailure("timed out after \(seconds) s") }
        return value
    }
}

/// A loopback server that answers every request in the same wrong way, and counts the connections
/// that ended.
final class BadHTTPServer: Sendable {
    enum Answer: Sendable {
        /// Reads the request, closes without a byte.
        case hangUp
        /// Something that is not HTTP.
        case garbage
        case status500
        /// 200 with a body that is not JSON.
        case notJSON
        /// Reads the request, never answers, keeps the connection.
        case silent
        /// A chunked 200 and one line, as a watch starts; then closes mid-stream.
        case oneLineThenHangUp
        /// The same, then keeps the connection as a quiet watch does.
        case oneLineThenWait
    }

    let channel: Channel
    let closed = Locked(0)
    var endpoint: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }

    init(_ answer: Answer) async throws {
        let closed = self.closed
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(Answerer(answer, closed)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async { try? await channel.close() }

    final class Answerer: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let answer: Answer
        let closed: Locked<Int>
        var answered = false
        init(_ answer: Answer, _ closed: Locked<Int>) {
            self.answer = answer
            self.closed = closed
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered else { return }
            answered = true
            let line = #"{"result":{"created":true}}"# + "\n"
            let chunked = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + String(line.utf8.count, radix: 16) + "\r\n" + line + "\r\n"
            switch answer {
            case .hangUp: context.close(promise: nil)
            case .garbage: send(context, "SSH-2.0-OpenSSH_9.2\r\n\u{1}\u{2}\u{3}\r\n\r\n", close: true)
            case .status500: send(context, "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\netcd is unwell\n", close: false)
            case .notJSON: send(context, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\nnot json\n", close: false)
            case .silent: break
            case .oneLineThenHangUp: send(context, chunked, close: true)
            case .oneLineThenWait: send(context, chunked, close: false)
            }
        }

        func send(_ context: ChannelHandlerContext, _ text: String, close: Bool) {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
            if close { context.close(promise: nil) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            closed.withLock { $0 += 1 }
            context.fireChannelInactive()
        }
    }
}
