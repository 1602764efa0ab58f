import ClusterTransport
import Crypto
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite struct TransportTests {
    @Test(.timeLimit(.minutes(1))) func aWrongSecretIsRefusedWithAClearErrorOnBothSides() async throws {
        try await EchoServer.with { s in
            // The server refuses a client that cannot prove the secret, tells it why and logs it.
            await #expect(throws: TransportError.authenticationFailed("authentication failed: wrong cluster secret")) {
                _ = try await s.connect(secret: ClusterSecret("wrong"))
            }
            #expect(try await s.server.recentRefusals().contains { $0.hasSuffix("(authentication): authentication failed: wrong cluster secret") })
            // The right secret still gets in.
            let c = try await s.connect()
            #expect(c.peer == s.identity)
            #expect(try await request(c, .echo, [9]) == ByteBuffer(bytes: [1, 9]))
        }
        // A client refuses a server that cannot prove the secret (an impostor that lets anyone in),
        // and tells it why.
        let impostor = try await ImpostorServer()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        await #expect(throws: TransportError.authenticationFailed("authentication failed: the server did not prove the cluster secret")) {
            _ = try await TransportClient.connect(host: "127.0.0.1", port: impostor.port, loop: group.next(), secret: ClusterSecret("right"),
                                                  identity: PeerIdentity(node: 2, volume: "vol-A")) { [:] }
        }
        #expect(try await impostor.refusal() == Refusal(.authentication, "authentication failed: the server did not prove the cluster secret"))
        await impostor.stop()
        try await group.shutdownGracefully()
    }

    @Test(.timeLimit(.minutes(1))) func aNodeOfAnotherVolumeIsRefused() async throws {
        try await EchoServer.with { s in
            await #expect(throws: TransportError.wrongVolume("node 1 of volume vol-A serves another volume than node 2 of volume vol-B")) {
                _ = try await s.connect(volume: "vol-B")
            }
        }
    }

    /// An attacker on the path after the handshake: every change to the client's frames closes
    /// the connection (the server checks each frame's tag under its sequence number), and the
    /// frame never reaches a service.
    @Test(.timeLimit(.minutes(1)), arguments: ["altered payload", "altered tag", "injected", "replayed", "reordered", "dropped"])
    func aFrameTamperedWithAfterTheHandshakeClosesTheConnection(_ attack: String) async throws {
        try await EchoServer.with { s in
            let proxy = try await TamperingProxy(targetPort: s.server.port)
            defer { Task { await proxy.stop() } }
            let c = try await s.connect(port: proxy.port)
            #expect(try await request(c, .echo, [1, 2, 3]) == ByteBuffer(bytes: [1, 1, 2, 3]))
            switch attack {
            case "altered payload": proxy.set(.flip(fromEnd: FrameProtection.tagSize + 1))
            case "altered tag": proxy.set(.flip(fromEnd: 0))
            case "injected":
                // A well-formed frame tagged under a key the attacker made up.
                var frame = ByteBuffer()
                var forged: FrameProtection? = FrameProtection(key: SymmetricKey(size: .bits256))
                try Frame(service: EchoServer.serviceA, kind: .oneWay, payload: ByteBuffer(bytes: [7])).encode(into: &frame, protection: &forged)
                proxy.set(.inject(Array(frame.readableBytesView)))
            case "replayed": proxy.set(.replayPrevious)
            case "reordered": proxy.set(.swapNextTwo)
            default: proxy.set(.drop)
            }
            c.send(EchoServer.serviceA, ByteBuffer(bytes: [1]))
            try await Task.sleep(nanoseconds: 50_000_000)
            c.send(EchoServer.serviceA, ByteBuffer(bytes: [2]))
            // The server refuses the connection; what waits fails, with the server's reason.
            let error = await #expect(throws: TransportError.self) { try await request(c, .echo, [4], timeout: .seconds(5)) }
            if case .refused(let why)? = error {
                #expect(why.contains("failed its integrity check"), "\(attack): \(why)")
            } else {
                Issue.record("\(attack): \(String(describing: error))")
            }
            try await c.channel.closeFuture.get()
            // At most the one-way frames before the tampered one reached the service.
            let delivered = s.oneWay.withLockedValue { $0.map { Array($0.readableBytesView) } }
            #expect(!delivered.contains([7]) && delivered.count <= 1, "\(attack): \(delivered)")
            #expect(try await s.server.recentRefusals().contains { $0.contains("failed its integrity check") })
        }
    }

    @Test(.timeLimit(.minutes(1))) func aSixteenMebibyteReplyRoundTrips() async throws {
        try await EchoServer.with { s in
            let c = try await s.connect()
            let size = Transport.maxFrame - Frame.headerSize - FrameProtection.tagSize
            var reply = try await request(c, .big, u32: UInt32(size))
            #expect(reply.readableBytes == size)
            #expect(reply.readBytes(length: reply.readableBytes)! == pattern(size))
            // One byte more does not fit a frame: the server says so instead of answering.
            await #expect(throws: TransportError.remote("a reply of \(size + 1) bytes exceeds the \(Transport.maxFrame)-byte frame limit")) {
                try await request(c, .big, u32: UInt32(size + 1))
            }
            // A request too large to send fails at once, with why.
            await #expect(throws: TransportError.tooLarge("a frame of \(Transport.maxFrame + 1) bytes exceeds the \(Transport.maxFrame)-byte limit")) {
                try await request(c, .echo, Array(repeating: 0, count: size), timeout: .seconds(5))
            }
            #expect(try await request(c, .echo, [5]) == ByteBuffer(bytes: [1, 5]))
        }
    }

    /// Many requests in flight on one connection, to two services, answered out of order: each
    /// caller gets its own reply from the service it asked.
    @Test(.timeLimit(.minutes(1))) func concurrentRequestsMultiplexAndCorrelate() async throws {
        try await EchoServer.with { s in
            let c = try await s.connect()
            let results = try await withThrowingTaskGroup(of: (Int, ByteBuffer).self) { group in
                for i in 0..<1000 {
                    group.addTask {
                        let service = i % 2 == 0 ? EchoServer.serviceA : EchoServer.serviceB
                        var id = ByteBuffer()
                        id.writeInteger(UInt32(i))
                        // Every third is delayed, so replies come back in another order.
                        let reply = i % 3 == 0
                            ? try await request(c, .slow, Array(id.readableBytesView), u32: UInt32(i % 50), service: service)
                            : try await request(c, .echo, Array(id.readableBytesView), service: service)
                        return (i, reply)
                    }
                }
                var all: [(Int, ByteBuffer)] = []
                for try await r in group { all.append(r) }
                return all
            }
            #expect(results.count == 1000)
            var order: [Int] = []
            for (i, var reply) in results {
                if i % 3 != 0 { #expect(reply.readInteger(as: UInt8.self) == (i % 2 == 0 ? 1 : 2)) }
                #expect(reply.readInteger(as: UInt32.self) == UInt32(i))
                order.append(i)
            }
            #expect(order != order.sorted(), "the replies came back in request order: nothing was out of order")
            #expect(try await c.outstandingRequests() == 0)
        }
    }

    @Test(.timeLimit(.minutes(1))) func aDeadlineFiresAndTheLateReplyIsDropped() async throws {
        try await EchoServer.with { s in
            let c = try await s.connect()
            let start = ContinuousClock.now
            await #expect(throws: TransportError.timedOut) {
                try await request(c, .slow, [1], u32: 400, timeout: .milliseconds(100))
            }
            let waited = ContinuousClock.now - start
            // Not before its deadline; that it fired before the reply came is the timedOut itself (the reply would have won).
            #expect(waited >= .milliseconds(100), "timed out after \(waited)")
            #expect(try await c.droppedReplies() == 0)
            // The reply comes 300 ms later: dropped, and counted; the connection still serves.
            try await Task.sleep(nanoseconds: 600_000_000)
            #expect(try await c.droppedReplies() == 1)
            #expect(try await c.outstandingRequests() == 0)
            #expect(try await request(c, .echo, [3]) == ByteBuffer(bytes: [1, 3]))
        }
    }

    /// The limits before authentication are the transport's, for every service: a peer that
    /// never authenticates is dropped at the deadline, and connections beyond the cap are refused.
    @Test(.timeLimit(.minutes(1))) func aPeerThatNeverAuthenticatesIsDroppedAndTheCapHolds() async throws {
        var limits = ConnectionLimits()
        // Long enough that the silent two still hold their slots when the third comes on a loaded machine.
        limits.handshakeTimeoutMillis = 2_000
        limits.maxConnectionsPerAddress = 2
        let s = try await EchoServer(limits: limits)
        do {
            let silent = [try await ClientBootstrap(group: s.group).connect(host: "127.0.0.1", port: s.server.port).get(),
                          try await ClientBootstrap(group: s.group).connect(host: "127.0.0.1", port: s.server.port).get()]
            // (let the server count both before the third comes)
            try await Task.sleep(nanoseconds: 50_000_000)
            await #expect(throws: TransportError.refused("too many connections from 127.0.0.1 (limit 2)")) {
                _ = try await s.connect()
            }
            let start = ContinuousClock.now
            for ch in silent { try await ch.closeFuture.get() }
            #expect(ContinuousClock.now - start < .seconds(15))
            #expect(try await s.server.recentRefusals().contains { $0.hasSuffix("(handshake): handshake not completed within 2000 ms") })
            // Their slots are free again.
            let c = try await s.connect()
            #expect(try await request(c, .echo, [8]) == ByteBuffer(bytes: [1, 8]))
        } catch {
            await s.stop()
            throw error
        }
        await s.stop()
    }
}

@Suite struct FrameProtectionTests {
    /// Each tag is HMAC-SHA256 under the key of the frame's sequence number and bytes, computed
    /// afresh (the per-frame copy of the keyed state must not carry one frame into the next).
    @Test func tagsAreTheHMACOfTheSequenceNumberAndTheFrame() throws {
        let key = SymmetricKey(size: .bits256)
        var protection: FrameProtection? = FrameProtection(key: key)
        for seq in UInt64(0)..<5 {
            var out = ByteBuffer()
            try Frame(service: ServiceID(rawValue: 1), kind: .oneWay, requestID: seq, payload: ByteBuffer(bytes: [UInt8(seq), 9]))
                .encode(into: &out, protection: &protection)
            let bytes = Array(out.readableBytesView)
            let body = bytes.dropLast(FrameProtection.tagSize)
            var signed = withUnsafeBytes(of: seq.bigEndian, Array.init)
            signed += body
            #expect(Array(bytes.suffix(FrameProtection.tagSize)) == Array(HMAC<SHA256>.authenticationCode(for: signed, using: key)))
        }
        #expect(protection!.sequence == 5)
    }
}
