import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import LockManager
import TestSupport

/// A raw TCP peer with a blocking socket and a receive timeout, to speak bad protocol on purpose.
final class RawPeer {
    let fd: Int32
    var inbox = ByteBuffer()
    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw ModelFailure("connect failed: \(errno)") }
    }
    deinit { close(fd) }
    func send(_ m: WireMessage) { var b = ByteBuffer(); m.encode(into: &b); sendRaw(Array(b.readableBytesView)) }
    func sendRaw(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) } }
    /// Next message, or nil at EOF / timeout.
    func receive() -> WireMessage? {
        while true {
            if let len: UInt32 = inbox.getInteger(at: inbox.readerIndex), inbox.readableBytes >= 4 + Int(len) {
                inbox.moveReaderIndex(forwardBy: 4)
                var body = inbox.readSlice(length: Int(len))!
                return try? WireMessage.decode(&body)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            inbox.writeBytes(chunk[0..<n])
        }
    }
    func authenticate(node: UInt32, secret: ClusterSecret) throws -> Epoch {
        guard case .hello(let nonce)? = receive() else { throw ModelFailure("no hello") }
        let cn = ClusterSecret.nonce()
        send(.auth(node: node, clientNonce: cn, mac: secret.clientProof(serverNonce: nonce, clientNonce: cn, node: node)))
        guard case let .welcome(epoch, _, _)? = receive() else { throw ModelFailure("no welcome") }
        return epoch
    }
}

/// A master on loopback with the local backend, for in-process tests.
struct MasterFixture {
    let dir: URL
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let secret = ClusterSecret("s3cret")
    let nodes: [DLMNode]
    init(count: Int) async throws {
        dir = try makeTemporaryDirectory("dlm-wire")
        let file = dir.appendingPathComponent("lun").path
        var ns: [DLMNode] = []
        for id in 1...UInt32(count) {
            let n = DLMNode(coordination: try LocalCoordination(path: file, region: .ownFile, node: id), secret: secret,
                            port: try freeLoopbackPort(), group: group)
            try await n.start()
            // Node 1 leads: start the others once it hosts the master.
            if id == 1 { try await eventually("node 1 to lead") { n.isMaster } }
            ns.append(n)
        }
        nodes = ns
        for n in ns { _ = try await n.client.listing() }
        try await eventually("recovery to end") { try await ns[0].client.listing().contains("(recovering)") == false }
    }
    var masterPort: Int { Int(nodes[0].address.split(separator: ":")[1])! }
    /// Runs `body` with a fixture and always stops it, also when the body throws.
    static func with(count: Int, _ body: (MasterFixture) async throws -> Void) async throws {
        let f = try await MasterFixture(count: count)
        do { try await body(f) } catch { await f.stop(); throw error }
        await f.stop()
    }

    func stop() async {
        for n in nodes.reversed() { await n.stop() }
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: dir)
    }
}

@Suite(.serialized) struct WireTests {
    @Test func framesRoundTrip() throws {
        let msgs: [WireMessage] = [
            .request(LockID(node: 3, serial: 9), process: 4, resource: "vhd/é", mode: .pw, flags: .noQueue, timeoutMillis: 7, epoch: 12),
            .convert(LockID(node: 1, serial: 2), mode: .nl, flags: [], timeoutMillis: 0, valueBlock: [1, 2], epoch: 3),
            .unlock(LockID(node: 1, serial: 2), valueBlock: nil, epoch: 3),
            .granted(LockID(node: 1, serial: 2), mode: .ex, valueBlock: ValueBlock(bytes: [5], valid: false)),
            .refused(LockID(node: 1, serial: 2), error: .staleEpoch(current: 77)),
            .recover(LockID(node: 2, serial: 1), process: 0, resource: "r", mode: .cr, valueBlock: .empty, epoch: 4),
            .demoted(LockID(node: 5, serial: 6)),
        ]
        for m in msgs {
            var b = ByteBuffer()
            m.encode(into: &b)
            let len: UInt32 = b.readInteger()!
            #expect(Int(len) == b.readableBytes)
            #expect(try WireMessage.decode(&b) == m)
        }
        var junk = ByteBuffer(bytes: [1, 99, 0])
        #expect(throws: WireFormat.DecodeError.self) { try WireMessage.decode(&junk) }
        var oldVersion = ByteBuffer(bytes: [0, 16])
        #expect(throws: WireFormat.DecodeError.self) { try WireMessage.decode(&oldVersion) }
        var badMode = ByteBuffer(bytes: [1, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9])
        #expect(throws: WireFormat.DecodeError.self) { try WireMessage.decode(&badMode) }
    }

    @Test(.timeLimit(.minutes(1))) func badPeersGetClearErrorsAndNoLocks() async throws {
        try await MasterFixture.with(count: 1) { f in
        // Wrong secret: refused and disconnected.
        let wrong = try RawPeer(port: f.masterPort)
        guard case .hello(let nonce)? = wrong.receive() else { throw ModelFailure("no hello") }
        let cn = ClusterSecret.nonce()
        wrong.send(.auth(node: 5, clientNonce: cn, mac: ClusterSecret("guess").clientProof(serverNonce: nonce, clientNonce: cn, node: 5)))
        #expect(wrong.receive() == .failure("authentication failed"))
        #expect(wrong.receive() == nil)
        // A request before authenticating: refused, disconnected, nothing granted.
        let rude = try RawPeer(port: f.masterPort)
        _ = rude.receive()
        rude.send(.request(LockID(node: 5, serial: 1), process: 0, resource: "vhd", mode: .ex, flags: [], timeoutMillis: 0, epoch: 1))
        #expect(rude.receive() == .failure("authentication failed"))
        #expect(rude.receive() == nil)
        // A malformed frame (bad length) from an authenticated peer: a clear error, then closed.
        let garbled = try RawPeer(port: f.masterPort)
        _ = try garbled.authenticate(node: 6, secret: f.secret)
        garbled.sendRaw([0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3])
        guard case .failure(let why)? = garbled.receive() else { throw ModelFailure("no failure for a bad frame") }
        #expect(why.contains("out of range"))
        #expect(garbled.receive() == nil)
        // A stale epoch, and a lock id of another node: refused.
        let peer = try RawPeer(port: f.masterPort)
        let epoch = try peer.authenticate(node: 7, secret: f.secret)
        peer.send(.request(LockID(node: 7, serial: 1), process: 0, resource: "vhd", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch - 1))
        #expect(peer.receive() == .refused(LockID(node: 7, serial: 1), error: .staleEpoch(current: epoch)))
        peer.send(.request(LockID(node: 1, serial: 99), process: 0, resource: "vhd", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch))
        #expect(peer.receive() == .refused(LockID(node: 1, serial: 99), error: .protocolError("lock id of another node")))
        // The master still serves, and none of them holds anything.
        let listing = try await f.nodes[0].client.listing()
        #expect(!listing.contains("granted"))
        let (h, _) = try await f.nodes[0].client.lock("vhd", mode: .ex, timeout: .seconds(5))
        #expect(f.nodes[0].client.isHeld(h))
        }
    }

    @Test(.timeLimit(.minutes(1))) func clientsOverTCPGetTheFullLockSemantics() async throws {
        try await MasterFixture.with(count: 2) { f in
        let a = f.nodes[0].client, b = f.nodes[1].client
        let blocked = Locked<[LockMode]>([])
        a.onBlocking { _, mode in blocked.withLock { $0.append(mode) } }
        let (ha, _) = try await a.lock("disk", mode: .pw, timeout: .seconds(5))
        // Try-lock fails at once.
        await #expect(throws: LockError.wouldBlock) { try await b.lock("disk", mode: .pr, flags: .noQueue) }
        // A queued request times out at the master, and the holder got a blocking callback.
        await #expect(throws: LockError.timedOut) { try await b.lock("disk", mode: .pr, timeout: .milliseconds(200)) }
        #expect(blocked.withLock { $0 }.contains(.pr))
        // A waiter is granted when the holder down-converts, with the value block it wrote.
        async let waiter = b.lock("disk", mode: .pr, timeout: .seconds(5))
        try await eventually("the waiter to queue") { try await a.listing().contains("waiting") }
        try await a.convert(ha, to: .cr, valueBlock: [4, 2])
        let (hb, vb) = try await waiter
        #expect(vb == ValueBlock(bytes: [4, 2]))
        #expect(b.mode(of: hb) == .pr && a.mode(of: ha) == .cr)
        // Conversion deadlock across nodes: both PR, both want EX; the later one is the victim.
        let (x1, _) = try await a.lock("meta", mode: .pr, timeout: .seconds(5))
        let (x2, _) = try await b.lock("meta", mode: .pr, timeout: .seconds(5))
        async let first = a.convert(x1, to: .ex, timeout: .seconds(5))
        try await eventually("the first conversion to queue") { try await a.listing().contains("converting") }
        await #expect(throws: LockError.deadlock) { try await b.convert(x2, to: .ex, timeout: .seconds(5)) }
        try await b.unlock(x2)
        _ = try await first
        #expect(a.mode(of: x1) == .ex)
        // The same with CONVDEADLK: the later converter is demoted to NL instead, and gets EX after.
        try await a.convert(x1, to: .pr)
        let (x3, _) = try await b.lock("meta", mode: .pr, timeout: .seconds(5))
        async let again = a.convert(x1, to: .ex, timeout: .seconds(5))
        try await eventually("the conversion to queue") { try await a.listing().contains("converting") }
        async let demoted = b.convert(x3, to: .ex, flags: .convDeadlock, timeout: .seconds(5))
        _ = try await again
        #expect(a.mode(of: x1) == .ex && !a.wasDemoted(x1))
        try await eventually("b to be demoted") { b.mode(of: x3) == .nl }
        try await a.unlock(x1)
        _ = try await demoted
        #expect(b.mode(of: x3) == .ex && b.wasDemoted(x3))
        try await b.unlock(x3)
        _ = try await a.lock("meta", mode: .ex, timeout: .seconds(5))
        // Cancelling the waiting task cancels the queued request at the master.
        let canceller = Task { try await b.lock("meta", mode: .ex, timeout: .seconds(5)) }
        try await eventually("the request to queue") { try await a.listing().contains("waiting") }
        canceller.cancel()
        await #expect(throws: LockError.cancelled) { try await canceller.value }
        #expect(try await a.listing().contains("waiting") == false)
        }
    }

    /// Callers running on the client's event loop (`executor`): grants, waits, timeouts and
    /// cancellation behave as from anywhere else.
    @Test(.timeLimit(.minutes(1))) func callersOnTheClientsEventLoop() async throws {
        try await MasterFixture.with(count: 2) { f in
        let a = f.nodes[0].client, b = f.nodes[1].client
        let onLoop = Task(executorPreference: b.executor) { () async throws -> Int in
            var n = 0
            for i in 0..<200 {
                #expect(b.eventLoop.inEventLoop)
                let (h, _) = try await b.lock("loop-\(i % 3)", mode: .ex, timeout: .seconds(5))
                #expect(b.eventLoop.inEventLoop && b.isHeld(h))
                try await b.unlock(h)
                n += 1
            }
            return n
        }
        #expect(try await onLoop.value == 200)
        // A wait on the loop ends when the holder (elsewhere) lets go; a timeout is reported.
        let (ha, _) = try await a.lock("shared", mode: .ex, timeout: .seconds(5))
        let timedOut = Task(executorPreference: b.executor) {
            try await b.lock("shared", mode: .pr, timeout: .milliseconds(100))
        }
        await #expect(throws: LockError.timedOut) { try await timedOut.value }
        let waiter = Task(executorPreference: b.executor) { try await b.lock("shared", mode: .pr, timeout: .seconds(5)).0 }
        try await eventually("the waiter to queue") { try await a.listing().contains("waiting") }
        try await a.unlock(ha)
        let hb = try await waiter.value
        #expect(b.mode(of: hb) == .pr)
        // Cancellation of a task on the loop cancels its request at the master.
        let (hx, _) = try await a.lock("excl", mode: .ex, timeout: .seconds(5))
        let cancelled = Task(executorPreference: b.executor) { try await b.lock("excl", mode: .ex, timeout: .seconds(5)) }
        try await eventually("the request to queue") { try await a.listing().contains("waiting") }
        cancelled.cancel()
        await #expect(throws: LockError.cancelled) { try await cancelled.value }
        try await a.unlock(hx)
        }
    }
}
