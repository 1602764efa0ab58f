import Foundation
import Testing
@testable import LockManager
import TestSupport
import ClusterTestSupport

/// The coordination event streams, seen from real `dlmtool node` processes (`--events` log) on a
/// real file and a real etcd.
@Suite(.serialized) struct CoordinationEventTests {
    struct Logged {
        var node: UInt32
        var time: UInt64
        var text: String
    }

    static func logged(_ url: URL) -> [Logged] {
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", maxSplits: 3)
            guard f.count == 4, f[0] == "EVENT", let n = UInt32(f[1]), let t = UInt64(f[2]) else { return nil }
            return Logged(node: n, time: t, text: String(f[3]))
        }
    }

    /// `leader(node N at A, epoch E)` or `gained(...)`: (N, E).
    static func named(_ text: String, _ kind: String) -> (node: UInt32, epoch: Epoch)? {
        guard text.hasPrefix("\(kind)(node "), let comma = text.range(of: ", epoch ") else { return nil }
        let node = text.dropFirst(kind.count + 6).prefix { $0.isNumber }
        let epoch = text[comma.upperBound...].prefix { $0.isNumber }
        guard let n = UInt32(node), let e = Epoch(epoch) else { return nil }
        return (n, e)
    }

    /// The leader every node's log agrees on (each logged it, and it logged its own win).
    static func agreedLeader(_ log: URL, nodes: [UInt32], after: UInt64 = 0, excluding: UInt32? = nil) -> (node: UInt32, epoch: Epoch)? {
        let events = logged(log).filter { $0.time >= after }
        var last: [UInt32: (node: UInt32, epoch: Epoch)] = [:]
        for e in events { if let l = named(e.text, "leader") { last[e.node] = l } }
        guard let first = last[nodes[0]], first.node != excluding,
              nodes.allSatisfy({ last[$0]?.node == first.node && last[$0]?.epoch == first.epoch }),
              events.contains(where: { $0.node == first.node && named($0.text, "gained")?.epoch == first.epoch }) else { return nil }
        return first
    }

    /// Whether something accepts TCP connections on 127.0.0.1:port.
    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// Waits (30 s at most) until every node's log names the same leader.
    static func awaitAgreedLeader(_ log: URL, nodes: [UInt32]) async throws -> (node: UInt32, epoch: Epoch) {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let l = agreedLeader(log, nodes: nodes) { return l }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw ModelFailure("timed out after 30 s waiting for nodes \(nodes) to log the same leader")
    }

    /// SIGKILL of the leader: every survivor logs the new leader (one of them its win, under a
    /// higher epoch). Prints the delay from the kill to each survivor's event, beside a poller of
    /// `leader()` at the old code's polling interval in the same run.
    func leaderDeathReachesEverySurvivor(_ cluster: TestCluster, log: URL, probe: any CoordinationBackend,
                                         pollMillis: UInt64, label: String) async throws {
        let ids: [UInt32] = [1, 2, 3]
        let old: (node: UInt32, epoch: Epoch)? = try await Self.awaitAgreedLeader(log, nodes: ids)
        let dead = old!.node
        let survivors = ids.filter { $0 != dead }
        let killedAt = monotonicNow()
        let poller = Task { () -> UInt64? in
            while !Task.isCancelled {
                if let l = try? await probe.leader(), l.node != dead { return monotonicNow() }
                try? await Task.sleep(nanoseconds: pollMillis * 1_000_000)
            }
            return nil
        }
        cluster.kill(dead)
        var new: (node: UInt32, epoch: Epoch)?
        try await eventually("the survivors to log a new leader", timeout: 60) {
            new = Self.agreedLeader(log, nodes: survivors, after: killedAt, excluding: dead)
            return new != nil
        }
        let polledAt = try await withTimeout(seconds: 30) { await poller.value }
        #expect(new!.epoch > old!.epoch)
        let after = Self.logged(log).filter { $0.time >= killedAt }
        // Exactly one survivor won, once.
        #expect(after.filter { $0.text.hasPrefix("gained(") }.map(\.node) == [new!.node])
        var delays: [String] = []
        for n in survivors {
            let seen = after.first { $0.node == n && Self.named($0.text, "leader")?.node == new!.node }!
            delays.append(String(format: "node %u %.1f ms", n, Double(seen.time - killedAt) / 1e6))
        }
        let polled = polledAt.map { String(format: "%.1f ms", Double($0 - killedAt) / 1e6) } ?? "never"
        print("\(label): SIGKILL of leader \(dead) to leader-changed event: \(delays.joined(separator: ", ")); poller every \(pollMillis) ms: \(polled)")
    }

    @Test(.timeLimit(.minutes(2))) func localLeaderDeathReachesEveryNode() async throws {
        let cluster = try TestCluster("dlm-events-local")
        let file = cluster.dir.appendingPathComponent("lun").path
        let log = cluster.dir.appendingPathComponent("coordination.log")
        for id: UInt32 in [1, 2, 3] {
            try cluster.start(node: id, backend: ["--backend", "local", "--file", file], workload: nil, extra: ["--events", log.path])
        }
        let probe = try LocalCoordination(path: file, region: .ownFile, node: 99)
        try await leaderDeathReachesEverySurvivor(cluster, log: log, probe: probe, pollMillis: 10, label: "local")
    }

    /// Both etcd cases on one etcd (each start of an etcd costs seconds on a loaded machine).
    @Test(.timeLimit(.minutes(4))) func etcdLeaderDeathAndCut() async throws {
        let etcd = try await EtcdServer()
        defer { etcd.stop() }
        try await etcdLeaderDeathReachesEveryNode(etcd)
        try await etcdLeaderStoppedPastItsLeaseIsFencedWhenItResumes(etcd)
    }

    func etcdLeaderDeathReachesEveryNode(_ etcd: EtcdServer) async throws {
        let cluster = try TestCluster("dlm-events-etcd")
        let log = cluster.dir.appendingPathComponent("coordination.log")
        let backend = ["--backend", "etcd", "--etcd", etcd.endpoint, "--volume", "events", "--ttl", "2"]
        for id: UInt32 in [1, 2, 3] { try cluster.start(node: id, backend: backend, workload: nil, extra: ["--events", log.path]) }
        let probe = try EtcdCoordination(endpoint: etcd.endpoint, volume: "events", node: 99)
        try await leaderDeathReachesEverySurvivor(cluster, log: log, probe: probe, pollMillis: 50, label: "etcd (TTL 2 s)")
    }

    /// A leader stopped past its lease: the others log a new leader while it sleeps; when it
    /// resumes it logs that it is fenced (and has lost its leadership), and never a win.
    func etcdLeaderStoppedPastItsLeaseIsFencedWhenItResumes(_ etcd: EtcdServer) async throws {
        let cluster = try TestCluster("dlm-events-cut")
        let log = cluster.dir.appendingPathComponent("coordination.log")
        let backend = ["--backend", "etcd", "--etcd", etcd.endpoint, "--volume", "cut", "--ttl", "2"]
        let ids: [UInt32] = [1, 2, 3]
        for id in ids { try cluster.start(node: id, backend: backend, workload: nil, extra: ["--events", log.path]) }
        let old: (node: UInt32, epoch: Epoch)? = try await Self.awaitAgreedLeader(log, nodes: ids)
        let cut = old!.node
        let others = ids.filter { $0 != cut }
        let masterPort = cluster.ports[cut]!
        try await eventually("the leader's master to listen") { Self.accepts(port: masterPort) }
        let stoppedAt = monotonicNow()
        cluster.kill(cut, signal: SIGSTOP)
        // A liveness bound: with other builds and fuzzers on the 2 cores, etcd took up to ~30 s here.
        try await eventually("the others to log a new leader", timeout: 60) {
            Self.agreedLeader(log, nodes: others, after: stoppedAt, excluding: cut) != nil
        }
        #expect(!Self.logged(log).contains { $0.node == cut && $0.time >= stoppedAt })
        let resumedAt = monotonicNow()
        cluster.kill(cut, signal: SIGCONT)
        try await eventually("the resumed leader to log fenced", timeout: 10) {
            Self.logged(log).contains { $0.node == cut && $0.text == "fenced" }
        }
        let mine = Self.logged(log).filter { $0.node == cut && $0.time >= stoppedAt }
        #expect(mine.allSatisfy { $0.time >= resumedAt })
        #expect(mine.contains { Self.named($0.text, "lost")?.epoch == old!.epoch })
        #expect(!mine.contains { $0.text.hasPrefix("gained(") })
        // Fenced, it hosts nothing: its master's port closes.
        try await eventually("the fenced node's master to stop", timeout: 10) { !Self.accepts(port: masterPort) }
        let fencedAt = mine.first { $0.text == "fenced" }!.time
        print(String(format: "etcd cut: leader %u fenced %.1f ms after SIGCONT (stopped %.1f s)", cut,
                     Double(fencedAt - resumedAt) / 1e6, Double(resumedAt - stoppedAt) / 1e9))
    }

    /// The watch's connection drops (a proxy between the node and etcd closes it); a member joins
    /// and later leaves while the node reconnects: both changes still arrive, once each, in order.
    @Test(.timeLimit(.minutes(1))) func etcdWatchResumesAfterItsConnectionDrops() async throws {
        let etcd = try await EtcdServer()
        defer { etcd.stop() }
        let proxy = try await TCPProxy(target: etcd.endpoint)
        // A long TTL keeps renewals (every 5 s) out of the moments the proxy drops connections.
        let a = try EtcdCoordination(endpoint: proxy.endpoint, volume: "blip", node: 1, ttl: 20)
        try await a.start(address: "127.0.0.1:1")
        let seen = Locked<[CoordinationEvent]>([])
        let stream = a.events()
        let collector = Task { for await e in stream { seen.withLock { $0.append(e) } } }
        try await eventually("node 1 to lead") { seen.withLock { $0 }.contains { if case .gainedLeadership = $0 { true } else { false } } }
        let before = seen.withLock { $0 }.count
        await proxy.dropConnections()
        let b = try EtcdCoordination(endpoint: etcd.endpoint, volume: "blip", node: 2, ttl: 20)
        try await b.start(address: "127.0.0.1:2")
        try await eventually("node 1 to see node 2 join") { seen.withLock { $0 }.contains(.membersChanged([1, 2])) }
        await proxy.dropConnections()
        await b.stop()
        try await eventually("node 1 to see node 2 leave") { seen.withLock { $0 }.last == .membersChanged([1]) }
        #expect(Array(seen.withLock { $0 }.dropFirst(before)) == [.membersChanged([1, 2]), .membersChanged([1])])
        collector.cancel()
        await a.stop()
        await proxy.stop()
    }

    /// A subscriber that joins late first receives the current state, then the changes.
    @Test(.timeLimit(.minutes(1))) func aLateSubscriberFirstReceivesTheCurrentState() async throws {
        let dir = try makeTemporaryDirectory("dlm-events-late")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lun").path
        let a = try LocalCoordination(path: file, region: .ownFile, node: 1), b = try LocalCoordination(path: file, region: .ownFile, node: 2)
        try await a.start(address: "127.0.0.1:1")
        try await eventually("node 1 to lead") { a.ownLeadership() != nil }
        try await b.start(address: "127.0.0.1:2")
        let lead = a.ownLeadership()!
        var early = a.events().makeAsyncIterator()
        while let e = await early.next(), e != .membersChanged([1, 2]) {}
        var stream = a.events().makeAsyncIterator()
        var first: [CoordinationEvent] = []
        while first.count < 3, let e = await stream.next() { first.append(e) }
        #expect(first == [.leaderChanged(lead), .membersChanged([1, 2]), .gainedLeadership(lead)])
        await b.stop()
        var next: CoordinationEvent?
        while let e = await stream.next() {
            next = e
            break
        }
        #expect(next == .membersChanged([1]))
        await a.stop()
        // Stopping ends the stream after the loss.
        var rest: [CoordinationEvent] = []
        while let e = await stream.next() { rest.append(e) }
        #expect(rest == [.lostLeadership(lead)])
    }
}

/// Runs `work`, failing with a clear error if it takes longer than `seconds`.
func withTimeout<T: Sendable>(seconds: Double, _ work: @escaping @Sendable () async -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { g in
        g.addTask { await work() }
        g.addTask { try await Task.sleep(nanoseconds: UInt64(seconds * 1e9)); return nil }
        guard let first = try await g.next(), let value = first else { throw ModelFailure("timed out after \(seconds) s") }
        g.cancelAll()
        return value
    }
}
