import Foundation
import NIOCore
import Testing
@testable import LockManager
import TestSupport

/// The master's port is reachable by anything on the cluster network: peers that never finish
/// their handshake, open connections without end, send half frames or garbage, or hoard locks
/// cost it a bounded amount each, are refused clearly, and never stop it serving the others.
@Suite(.serialized) struct HostilePeerTests {
    @Test(.timeLimit(.minutes(1))) func aPeerThatNeverFinishesItsHandshakeIsDroppedAtTheDeadline() async throws {
        var limits = MasterLimits()
        limits.handshakeTimeoutMillis = 300
        try await MasterFixture.with(count: 1, limits: limits) { f in
            let silent = try RawPeer(port: f.masterPort)
            let start = monotonicNow()
            guard case .hello? = silent.receive() else { throw ModelFailure("no hello") }
            #expect(silent.receive() == .failure("handshake not completed within 300 ms"))
            #expect(silent.receive() == nil)
            let waited = Double(monotonicNow() - start) / 1e9
            // Not before the deadline; and (liveness, generously) not much after it.
            #expect(waited >= 0.3 && waited < 4, "dropped after \(waited) s")
            // An authenticated peer is not dropped at the deadline.
            let good = try RawPeer(port: f.masterPort)
            let epoch = try good.authenticate(node: 7, secret: f.secret)
            try await Task.sleep(nanoseconds: 500_000_000)
            try good.send(.request(LockID(node: 7, serial: 1), process: 0, resource: "r", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch))
            #expect(good.receive() == .granted(LockID(node: 7, serial: 1), mode: .ex, valueBlock: .empty))
        }
    }

    @Test(.timeLimit(.minutes(1))) func connectionsBeyondTheCapsAreRefusedWhileANodeKeepsGettingLocks() async throws {
        var limits = MasterLimits()
        limits.maxConnectionsPerAddress = 4
        limits.maxConnections = 12
        limits.handshakeTimeoutMillis = 30_000
        try await MasterFixture.with(count: 2, limits: limits) { f in
            // Two connections from 127.0.0.1 already: the nodes' own clients.
            let legit = f.nodes[1].client
            let traffic = Task {
                for i in 0..<200 {
                    let (h, _) = try await legit.lock("legit-\(i % 4)", mode: .ex, timeout: .seconds(5))
                    try await legit.unlock(h)
                }
            }
            func flood(from source: String, count: Int) throws -> (accepted: [RawPeer], refusals: [WireMessage?]) {
                var accepted: [RawPeer] = [], refusals: [WireMessage?] = []
                for _ in 0..<count {
                    let p = try RawPeer(port: f.masterPort, source: source)
                    let first = p.receive()
                    if case .hello? = first { accepted.append(p) } else { refusals.append(first); #expect(p.receive() == nil) }
                }
                return (accepted, refusals)
            }
            // Per address: 4 from 127.0.0.2, the other 6 refused.
            let a = try flood(from: "127.0.0.2", count: 10)
            #expect(a.accepted.count == 4)
            #expect(a.refusals.count == 6 && a.refusals.allSatisfy { $0 == .failure("too many connections from 127.0.0.2 (limit 4)") })
            // In all: 2 + 4 + 4 from 127.0.0.3 + 2 from 127.0.0.4 = 12. Beyond that a newcomer takes
            // the place of the oldest connection that has not authenticated, so a flood cannot keep
            // a node from (re)connecting.
            let b = try flood(from: "127.0.0.3", count: 4)
            let c = try flood(from: "127.0.0.4", count: 4)
            #expect(b.accepted.count == 4 && c.accepted.count == 4)
            let dropped = "dropped: the lock master has 12 connections and this one had not authenticated"
            for p in a.accepted.prefix(2) {
                #expect(p.receive() == .failure(dropped))
                #expect(p.receive() == nil)
            }
            let newcomer = try RawPeer(port: f.masterPort)
            let epoch = try newcomer.authenticate(node: 20, secret: f.secret)
            try newcomer.send(.request(LockID(node: 20, serial: 1), process: 0, resource: "newcomer", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch))
            #expect(newcomer.receive() == .granted(LockID(node: 20, serial: 1), mode: .ex, valueBlock: .empty))
            // The legitimate node was served throughout, and still is.
            try await traffic.value
            let (h, _) = try await legit.lock("after-flood", mode: .ex, timeout: .seconds(5))
            #expect(legit.isHeld(h))
            // Closed connections give their slots back. Once every slot is an authenticated
            // node's, a newcomer is refused.
            for p in a.accepted + b.accepted + c.accepted { p.close() }
            var nodes: [RawPeer] = []
            for i in 0..<9 {
                let p = try RawPeer(port: f.masterPort, source: "127.0.0.\(5 + i / 3)")
                _ = try p.authenticate(node: 21 + UInt32(i), secret: f.secret)
                nodes.append(p)
            }
            // (the master sees the closed connections' EOF at once on loopback; allow it a moment)
            try await Task.sleep(nanoseconds: 300_000_000)
            let late = try RawPeer(port: f.masterPort, source: "127.0.0.9")
            #expect(late.receive() == .failure("too many connections to the lock master (limit 12)"))
            #expect(late.receive() == nil)
            #expect(nodes.allSatisfy { $0.isOpen } && newcomer.isOpen)
        }
    }

    /// Before authentication a peer may make the master buffer at most `maxFrameBeforeAuth` bytes:
    /// a frame header announcing 64 KiB is refused on the spot. Measured on a real master process:
    /// 300 such half-sent frames, left open, must not cost it more than a few KiB each (before,
    /// each held the frame's buffer, about 115 KB, and stayed open).
    @Test(.timeLimit(.minutes(1))) func aHalfSentFrameBeforeAuthenticationCostsAtMostTheBound() async throws {
        let c = try TestCluster("dlm-halfframe")
        defer { c.stopAll() }
        let file = c.dir.appendingPathComponent("lun").path
        try c.start(node: 1, backend: ["--backend", "local", "--file", file], workload: nil,
                    extra: ["--max-connections", "2000", "--max-connections-per-address", "2000", "--handshake-timeout-ms", "60000"])
        let probe = try LocalCoordination(path: file, region: .ownFile, node: 200)
        try await eventually("node 1 to lead") { try await probe.leader()?.node == 1 }
        let port = c.ports[1]!
        try await eventually("the master to accept") { (try? RawPeer(port: port)) != nil }
        let pid = c.nodes[1]!.pid
        let before = try ResidentMemory.bytes(of: pid)
        var header: [UInt8] = [0, 1, 0, 0, 1, 16]   // a 65,536-byte frame: version 1, type 16...
        header += Array(repeating: 0xAB, count: 32 * 1024)   // ...and half its body
        var peers: [RawPeer] = []
        for _ in 0..<300 {
            let p = try RawPeer(port: port)
            guard case .hello? = p.receive() else { throw ModelFailure("no hello") }
            p.sendRaw(header)
            peers.append(p)
        }
        // Each is told why and closed, without waiting for the rest of its frame.
        for p in peers {
            let answer = p.receive()
            #expect(answer == .failure("frame length 65536 out of range (2...\(WireFormat.maxFrameBeforeAuth))"))
            #expect(p.receive() == nil)
            if answer == nil { break }   // one silent master is enough to know (each wait is 5 s)
        }
        let grown = try ResidentMemory.bytes(of: pid) - before
        #expect(grown < 300 * 8 * 1024, "the master grew by \(grown) bytes for 300 half-sent frames")
        // Half-sent frames that are within the bound stay, each costing at most the bound in buffers.
        var held: [RawPeer] = []
        for _ in 0..<300 {
            let p = try RawPeer(port: port)
            guard case .hello? = p.receive() else { throw ModelFailure("no hello") }
            p.sendRaw([0, 0, 0, 200, 1, 2] + Array(repeating: 0, count: 100))   // 106 of a 204-byte frame
            held.append(p)
        }
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(held.allSatisfy { $0.isOpen }, "a half-frame within the bound closed its connection early")
        let grownHeld = try ResidentMemory.bytes(of: pid) - before
        #expect(grownHeld < 300 * 16 * 1024, "the master grew by \(grownHeld) bytes for 300 open half-frames")
        print("half-sent frames: +\(grown / 1024) KiB after 300 refused 64 KiB headers, +\(grownHeld / 1024) KiB with 300 small half-frames open")
    }

    /// Malformed frames of every kind, before and after authentication: each gets a clear
    /// failure and closes its own connection; a bystander's connection and locks are untouched.
    @Test(.timeLimit(.minutes(1))) func malformedFramesOfEveryKindCloseOnlyTheirOwnConnection() async throws {
        try await MasterFixture.with(count: 1) { f in
            let bystander = try RawPeer(port: f.masterPort)
            let epoch = try bystander.authenticate(node: 8, secret: f.secret)
            let held = LockID(node: 8, serial: 1)
            try bystander.send(.request(held, process: 0, resource: "bystander", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch))
            #expect(bystander.receive() == .granted(held, mode: .ex, valueBlock: .empty))

            var frames: [(String, [UInt8])] = []
            func frame(_ body: [UInt8]) -> [UInt8] { withUnsafeBytes(of: UInt32(body.count).bigEndian, Array.init) + body }
            /// A frame body of protocol version 1: the type and payload come from `fill`.
            func body(_ fill: (inout ByteBuffer) -> Void) -> [UInt8] {
                var b = ByteBuffer(bytes: [WireFormat.version])
                fill(&b)
                return Array(b.readableBytesView)
            }
            for m in WireMessage.samples {
                var b = ByteBuffer()
                try m.encode(into: &b)
                let body = Array(b.readableBytesView.dropFirst(4))
                frames.append(("\(m.type) truncated", frame(Array(body.dropLast()))))
                frames.append(("\(m.type) with a trailing byte", frame(body + [0])))
                frames.append(("\(m.type) in version 2", frame([2] + body.dropFirst())))
            }
            frames += [
                ("length 0", [0, 0, 0, 0]), ("length 1", [0, 0, 0, 1, 1]), ("length 2^32-1", [0xFF, 0xFF, 0xFF, 0xFF, 1, 2]),
                ("unknown type", frame([1, 99])),
                ("invalid UTF-8 name", frame(body { b in
                    b.writeInteger(UInt8(10)); b.writeLockID(LockID(node: 8, serial: 2)); b.writeInteger(UInt32(0))
                    b.writeInteger(UInt16(2)); b.writeBytes([0xC3, 0x28])
                    b.writeInteger(UInt8(5)); b.writeInteger(UInt8(0)); b.writeInteger(UInt32(0)); b.writeInteger(UInt64(1))
                })),
                ("bad mode", frame(body { b in b.writeInteger(UInt8(22)); b.writeLockID(LockID(node: 8, serial: 2)); b.writeInteger(UInt8(9)) })),
                ("bad error code", frame(body { b in b.writeInteger(UInt8(21)); b.writeLockID(LockID(node: 8, serial: 2)); b.writeInteger(UInt8(77)) })),
                ("oversized value block", frame(body { b in
                    b.writeInteger(UInt8(12)); b.writeLockID(LockID(node: 8, serial: 2)); b.writeInteger(UInt8(1))
                    b.writeInteger(UInt16(65)); b.writeBytes(Array(repeating: 0, count: 65)); b.writeInteger(UInt64(1))
                })),
            ]
            for (i, (what, bytes)) in frames.enumerated() {
                for authenticated in [false, true] {
                    let p = try RawPeer(port: f.masterPort)
                    if authenticated {
                        _ = try p.authenticate(node: 100 + UInt32(i), secret: f.secret)
                    } else {
                        guard case .hello? = p.receive() else { throw ModelFailure("no hello") }
                    }
                    p.sendRaw(bytes)
                    guard case .failure? = p.receive() else {
                        Issue.record("\(what) (authenticated: \(authenticated)) got no failure")
                        continue
                    }
                    #expect(p.receive() == nil, "\(what) (authenticated: \(authenticated)): the connection stayed open")
                }
            }
            // The bystander still holds its lock and is served on its connection.
            #expect(try await f.nodes[0].client.listing().contains("granted 8:1 owner 8.0 EX"))
            try bystander.send(.unlock(held, valueBlock: nil, epoch: epoch))
            #expect(bystander.receive() == .released(held))
            let (h, _) = try await f.nodes[0].client.lock("bystander", mode: .ex, timeout: .seconds(5))
            #expect(f.nodes[0].client.isHeld(h))
        }
    }

    /// A node that disconnected and is not a member cannot act on its locks once its fencing
    /// deadline has passed: they are purged then (never before), and a waiter gets the lock.
    @Test(.timeLimit(.minutes(1))) func aGoneNonMembersLocksArePurgedAfterItsDeadline() async throws {
        var limits = MasterLimits()
        limits.orphanGraceMillis = 700
        try await MasterFixture.with(count: 1, limits: limits) { f in
            let stranger = try RawPeer(port: f.masterPort)
            let epoch = try stranger.authenticate(node: 9, secret: f.secret)   // authenticated, never a member
            let id = LockID(node: 9, serial: 1)
            try stranger.send(.request(id, process: 0, resource: "orphan", mode: .ex, flags: [], timeoutMillis: 0, epoch: epoch))
            #expect(stranger.receive() == .granted(id, mode: .ex, valueBlock: .empty))
            stranger.close()
            let gone = monotonicNow()
            let (h, _) = try await f.nodes[0].client.lock("orphan", mode: .ex, timeout: .seconds(20))
            let after = Double(monotonicNow() - gone) / 1e9
            #expect(after >= 0.7, "node 9's lock was given away \(after) s after it left, before its deadline")
            #expect(after < 10, "purge took \(after) s")
            #expect(f.nodes[0].client.isHeld(h))
            #expect(!(try await f.nodes[0].client.listing().contains("owner 9.")))
        }
    }

    /// A node's locks and resource-name bytes are limited; each refusal says which limit.
    @Test(.timeLimit(.minutes(1))) func aNodesLocksAndNameBytesAreLimited() async throws {
        var limits = MasterLimits()
        limits.maxLocksPerNode = 5
        limits.maxNameBytesPerNode = 200
        try await MasterFixture.with(count: 2, limits: limits) { f in
            let c = f.nodes[1].client
            var handles: [LockHandle] = []
            for i in 0..<5 { handles.append(try await c.lock("l\(i)", mode: .ex, timeout: .seconds(5)).0) }
            await #expect(throws: LockError.limitReached("node 2 has 5 locks (limit 5)")) {
                try await c.lock("l5", mode: .ex, timeout: .seconds(5))
            }
            try await c.unlock(handles.removeLast())
            handles.append(try await c.lock("l5", mode: .ex, timeout: .seconds(5)).0)
            for h in handles { try await c.unlock(h) }
            let long = String(repeating: "n", count: 150)
            let first = try await c.lock(long + "1", mode: .ex, timeout: .seconds(5)).0
            await #expect(throws: LockError.limitReached("node 2 has 151 bytes of resource names (limit 200)")) {
                try await c.lock(long + "2", mode: .ex, timeout: .seconds(5))
            }
            try await c.unlock(first)
            // A raw peer's over-long name is refused by the master too.
            let raw = try RawPeer(port: f.masterPort)
            let epoch = try raw.authenticate(node: 9, secret: f.secret)
            var b = ByteBuffer()
            let name = Array(repeating: UInt8(ascii: "x"), count: 1500)
            b.writeInteger(UInt32(2 + 12 + 4 + 2 + name.count + 1 + 1 + 4 + 8))
            b.writeInteger(UInt8(1)); b.writeInteger(UInt8(10))
            b.writeInteger(UInt32(9)); b.writeInteger(UInt64(1)); b.writeInteger(UInt32(0))
            b.writeInteger(UInt16(name.count)); b.writeBytes(name)
            b.writeInteger(LockMode.ex.rawValue); b.writeInteger(UInt8(0)); b.writeInteger(UInt32(0)); b.writeInteger(epoch)
            raw.sendRaw(Array(b.readableBytesView))
            #expect(raw.receive() == .refused(LockID(node: 9, serial: 1), error: .limitReached("resource name of 1500 bytes (limit 1024)")))
            // The other node is not affected.
            let (h, _) = try await f.nodes[0].client.lock("l0", mode: .ex, timeout: .seconds(5))
            #expect(f.nodes[0].client.isHeld(h))
        }
    }

    /// `dlmtool list` of a table with 100,000 locks (about 6 MB of text: a hundred frames).
    @Test(.timeLimit(.minutes(3))) func dlmtoolListsAHundredThousandLocks() async throws {
        try await MasterFixture.with(count: 1) { f in
            let peer = try RawPeer(port: f.masterPort)
            let epoch = try peer.authenticate(node: 30, secret: f.secret)
            let count = 100_000
            var burst = ByteBuffer()
            for i in 0..<count {
                try WireMessage.request(LockID(node: 30, serial: UInt64(i)), process: 0, resource: "inode-" + String(String(i).reversed()).padding(toLength: 26, withPad: "0", startingAt: 0).reversed(),
                                        mode: .pr, flags: [], timeoutMillis: 0, epoch: epoch).encode(into: &burst)
            }
            peer.sendRaw(Array(burst.readableBytesView))
            for _ in 0..<count {
                guard case .granted? = peer.receive() else { throw ModelFailure("a lock was not granted") }
            }
            let file = f.dir.appendingPathComponent("lun").path
            let (status, text) = try TestCluster.run(["list", "--backend", "local", "--file", file, "--secret", "s3cret", "--timeout", "60"])
            #expect(status == 0)
            let lines = text.split(separator: "\n")
            #expect(lines.filter { $0.hasPrefix("  granted 30:") }.count == count)
            #expect(lines.filter { $0.hasPrefix("resource inode-") }.count == count)
            #expect(lines.contains("resource inode-00000000000000000000099999 lvb[]"))
        }
    }
}
