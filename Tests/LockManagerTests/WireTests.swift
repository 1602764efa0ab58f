import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import LockManager
import TestSupport

@Suite(.serialized) struct WireTests {
    @Test func framesRoundTrip() throws {
        let msgs = WireMessage.samples
        #expect(Set(msgs.map(\.type)).count == 17, "a sample of every message type")
        for m in msgs {
            var b = ByteBuffer()
            try m.encode(into: &b)
            let len: UInt32 = b.readInteger()!
            #expect(Int(len) == b.readableBytes)
            #expect(try WireMessage.decode(&b) == m)
        }
        // Listings of any size go in frames that fit; each is whole lines.
        let lines = (0..<5000).map { "  granted 1:\($0) owner 1.0 EX on a-resource-name-of-thirty-two-b" }
        let frames = WireMessage.listingFrames(lines)
        #expect(frames.count > 5)
        var text = ""
        for f in frames {
            var b = ByteBuffer()
            try f.encode(into: &b)
            #expect(b.readableBytes <= 4 + WireFormat.maxFrame)
            guard case let .listing(t, more) = f else { throw ModelFailure("not a listing frame") }
            #expect(more == (f != frames.last) && t.hasSuffix("\n"))
            text += t
        }
        #expect(text == lines.joined(separator: "\n") + "\n")
        var junk = ByteBuffer(bytes: [1, 99, 0])
        #expect(throws: WireFormat.DecodeError.self) { try WireMessage.decode(&junk) }
        var oldVersion = ByteBuffer(bytes: [0, 16])
        #expect(throws: WireFormat.DecodeError.self) { try WireMessage.decode(&oldVersion) }
        var badMode = ByteBuffer(bytes: [1, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9])
        #expect(throws: WireFormat.DecodeError.self) { try WireMessage.decode(&badMode) }
    }

    /// Every length is checked before it is written: what cannot fit is an error, never a trap.
    @Test func encodingsThatCannotFitAreErrors() async throws {
        let tooLong: [WireMessage] = [
            .failure(String(repeating: "x", count: 70_000)),                          // a u16 length
            .hello(nonce: Array(repeating: 0, count: 65_535)),                        // the frame
            .request(LockID(node: 1, serial: 1), process: 0, resource: String(repeating: "r", count: 2000),
                     mode: .ex, flags: [], timeoutMillis: 0, epoch: 1),               // a resource name
            .unlock(LockID(node: 1, serial: 1), valueBlock: Array(repeating: 1, count: 65), epoch: 1),
        ]
        for m in tooLong {
            var b = ByteBuffer()
            #expect(throws: WireFormat.EncodeError.self) { try m.encode(into: &b) }
        }
        // A protocol error's text is cut at a character boundary, so it still decodes.
        var b = ByteBuffer()
        try WireMessage.refused(LockID(node: 1, serial: 1), error: .protocolError(String(repeating: "é", count: 999))).encode(into: &b)
        b.moveReaderIndex(forwardBy: 4)
        guard case .refused(_, .protocolError(let text)) = try WireMessage.decode(&b) else { throw ModelFailure("no refusal") }
        #expect(text.utf8.count <= 1000 && text.allSatisfy { $0 == "é" })
        // The client refuses what it could not send, with a clear error.
        try await MasterFixture.with(count: 1) { f in
            let c = f.nodes[0].client
            await #expect(throws: LockError.self) { try await c.lock(String(repeating: "n", count: 1025), mode: .ex) }
            let (h, _) = try await c.lock("ok", mode: .ex, timeout: .seconds(5))
            await #expect(throws: LockError.self) { try await c.unlock(h, valueBlock: Array(repeating: 0, count: 65)) }
            try await c.unlock(h, valueBlock: Array(repeating: 0, count: 64))
        }
    }

    @Test(.timeLimit(.minutes(1))) func badPeersGetClearErrorsAndNoLocks() async throws {
        try await MasterFixture.with(count: 1) { f in
        // Wrong secret: refused and disconnected.
        let wrong = try RawPeer(port: f.masterPort)
        guard case .hello(let nonce)? = wrong.receive() else { throw ModelFailure("no hello") }
        let cn = ClusterSecret.nonce()
        try wrong.send(.auth(node: 5, clientNonce: cn, mac: ClusterSecret("guess").clientProof(serverNonce: nonce, clientNonce: cn, node: 5)))
        #expect(wrong.receive() == .failure("authentication failed"))
        #expect(wrong.receive() == nil)
        // A request before authenticating: refused, disconnected, nothing granted.
        let rude = try RawPeer(port: f.masterPort)
        _ = rude.receive()
        try rude.send(.request(LockID(node: 5, serial: 1), process: 0, resource: "vhd", mode: .ex, flags: [], timeoutMillis: 0, epoch: 1))
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
        try peer.send(.request(LockID(node: 7, serial: 1), process: 0, resource: "vhd", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch - 1))
        #expect(peer.receive() == .refused(LockID(node: 7, serial: 1), error: .staleEpoch(current: epoch)))
        try peer.send(.request(LockID(node: 1, serial: 99), process: 0, resource: "vhd", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch))
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
