import Foundation
import Testing
import LockManager
import TestSupport
import ClusterTestSupport

/// Several `dlmtool node` processes over real TCP on loopback; the master is SIGKILLed in the
/// middle of traffic. Serialized: they share two cores with each other.
@Suite(.serialized) struct MultiProcessTests {
    /// Runs traffic, kills the master, and checks exclusion, epochs and value blocks, and when the
    /// new master's first grant came: not before the dead master could have stopped acting
    /// (`notBefore` seconds after its death), and within a generous liveness bound.
    func killMasterMidTraffic(cluster c: TestCluster, notBefore: Double,
                              leader: () async throws -> Leadership?) async throws {
        try await eventually("a leader") { try await leader() != nil }
        try await eventually("traffic before the kill") { c.events().filter { $0.kind == "ACQ" }.count >= 40 }
        let old = try #require(try await leader())
        let killedAt = monotonicNow()
        c.kill(old.node)
        try await eventually("traffic under the new master", timeout: 30) {
            c.events().filter { $0.kind == "ACQ" && ($0.epoch ?? 0) > old.epoch }.count >= 40
        }
        // A grant the old master sent just before it died may still be used; every later one
        // comes from a higher epoch, and the dead node never acquires again.
        let afterKill = c.events().filter { $0.kind == "ACQ" && $0.time > killedAt }
        #expect(afterKill.allSatisfy { ($0.epoch ?? 0) >= old.epoch && $0.node != old.node })
        let after = afterKill.filter { ($0.epoch ?? 0) > old.epoch }
        let intervals = try c.checkMutualExclusion(deaths: [old.node: killedAt])
        #expect(intervals >= 80)
        // The value block is a counter each holder bumps on release: consecutive under one
        // master; at the change of master it is a survivor's copy, or invalid / reset when no
        // surviving holder above CR kept it.
        var prev: UInt64? = nil
        var prevEpoch: UInt64? = nil
        for e in c.events() where e.kind == "ACQ" {
            let v = e.lvb.flatMap { UInt64($0) }
            if let pe = prevEpoch, e.epoch != pe {
                #expect(e.lvb == "invalid" || v == 0 || v == prev.map { $0 + 1 }, "first value block under epoch \(e.epoch ?? 0): \(e.lvb ?? "-") after \(prev.map(String.init) ?? "-")")
            } else if let p = prev, let v {
                #expect(v == p + 1, "value block went from \(p) to \(v)")
            }
            prev = v ?? 0
            prevEpoch = e.epoch
        }
        let first = try #require(after.first)
        let seconds = Double(first.time - killedAt) / 1e9
        #expect(seconds >= notBefore, "the new master granted \(seconds) s after the old one died, before it could have stopped acting")
        #expect(seconds < failoverLiveness, "failover took \(seconds) s")
        print("failover: first grant \(seconds * 1000) ms after the master's SIGKILL")
    }

    @Test(.timeLimit(.minutes(1))) func localBackendMasterKilledMidTraffic() async throws {
        let c = try TestCluster("dlm-local")
        defer { c.stopAll() }
        let file = c.dir.appendingPathComponent("lun").path
        for id: UInt32 in 1...3 { try c.start(node: id, backend: ["--backend", "local", "--file", file]) }
        let probe = try LocalCoordination(path: file, region: .ownFile, node: 200)
        // The kernel drops a dead process's OFD locks at once: it is fenced the instant it dies.
        try await killMasterMidTraffic(cluster: c, notBefore: 0) { try await probe.leader() }
    }

    @Test(.timeLimit(.minutes(1))) func etcdBackendMasterKilledMidTraffic() async throws {
        let etcd = try await EtcdServer()
        defer { etcd.stop() }
        let c = try TestCluster("dlm-etcd")
        defer { c.stopAll() }
        let backend = ["--backend", "etcd", "--etcd", etcd.endpoint, "--volume", "v1", "--ttl", "2"]
        for id: UInt32 in 1...3 { try c.start(node: id, backend: backend) }
        let probe = try EtcdCoordination(endpoint: etcd.endpoint, volume: "v1", node: 200)
        try await killMasterMidTraffic(cluster: c, notBefore: etcdNotBefore(ttl: 2)) { try await probe.leader() }
    }

    /// A node cut off from etcd (its path to etcd goes through a proxy the test kills) fences
    /// itself before its lease can expire; only then is its lock granted to another node.
    @Test(.timeLimit(.minutes(1))) func nodeIsolatedFromEtcdNeverSharesALock() async throws {
        let etcd = try await EtcdServer()
        defer { etcd.stop() }
        let proxy = try await TCPProxy(target: etcd.endpoint)
        let c = try TestCluster("dlm-isolate")
        defer { c.stopAll() }
        let probe = try EtcdCoordination(endpoint: etcd.endpoint, volume: "v2", node: 200)
        // Node 1 (direct to etcd) becomes master; node 2 reaches etcd only through the proxy and,
        // once it gets the lock, holds it for a long time.
        try c.start(node: 1, backend: ["--backend", "etcd", "--etcd", etcd.endpoint, "--volume", "v2", "--ttl", "2"], workload: nil)
        try await eventually("node 1 to lead") { try await probe.leader()?.node == 1 }
        try c.start(node: 2, backend: ["--backend", "etcd", "--etcd", proxy.endpoint, "--volume", "v2", "--ttl", "2"],
                    workload: "vhd", holdMs: 60_000)
        try await eventually("node 2 to hold the lock") { c.events().contains { $0.kind == "ACQ" && $0.node == 2 } }
        try c.start(node: 3, backend: ["--backend", "etcd", "--etcd", etcd.endpoint, "--volume", "v2", "--ttl", "2"])
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(!c.events().contains { $0.kind == "ACQ" && $0.node == 3 }, "node 3 got the lock while node 2 held it")
        await proxy.cut()
        try await eventually("node 3 to get the lock", timeout: 20) { c.events().contains { $0.kind == "ACQ" && $0.node == 3 } }
        let ev = c.events()
        let fenced = try #require(ev.first { $0.kind == "FENCED" && $0.node == 2 }, "node 2 never fenced itself")
        let granted = ev.first { $0.kind == "ACQ" && $0.node == 3 }!
        #expect(fenced.time < granted.time, "node 3 acquired before node 2 stopped acting")
        _ = try c.checkMutualExclusion(deaths: [:])
        // The margin (500 ms) between a node's own stop and its lease's end is what keeps a
        // paused or cut-off holder from acting after its lock moved: it must show, at least half of it.
        let gap = Double(granted.time - fenced.time) / 1e9
        #expect(gap >= 0.25, "node 2 stopped only \(gap) s before node 3's grant")
        print("isolation: node 2 fenced \(gap * 1000) ms before node 3's grant")
        await proxy.stop()
    }

    @Test(.timeLimit(.minutes(1))) func dlmtoolListShowsHolders() async throws {
        let c = try TestCluster("dlm-list")
        defer { c.stopAll() }
        let file = c.dir.appendingPathComponent("lun").path
        try c.start(node: 1, backend: ["--backend", "local", "--file", file], workload: "vhd-a", holdMs: 60_000)
        try await eventually("node 1 to hold vhd-a") { c.events().contains { $0.kind == "ACQ" } }
        let listing = try runProcess(try TestCluster.dlmtool().path, ["list", "--backend", "local", "--file", file, "--secret", c.secret], timeout: 30)
        #expect(listing.status == 0, "\(listing.stderr)")
        #expect(listing.stdout.contains("resource vhd-a"))
        #expect(listing.stdout.contains("granted 1:") && listing.stdout.contains("owner 1.0 EX"))
        // A wrong secret gets nothing.
        let refused = try runProcess(try TestCluster.dlmtool().path, ["list", "--backend", "local", "--file", file, "--secret", "wrong"], timeout: 30)
        #expect(refused.status != 0)
    }

    /// `--region` that is not OFFSET+LENGTH, or too small for the backend, is refused with the reason.
    @Test(.timeLimit(.minutes(1))) func dlmtoolRefusesABadRegion() throws {
        let dir = try makeTemporaryDirectory("dlm-bad-region")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lun").path
        for (region, reason) in [("64K", "--region must be OFFSET+LENGTH"), ("0+100", "at least \(LocalCoordination.regionLength) bytes")] {
            let result = try runProcess(try TestCluster.dlmtool().path,
                                        ["node", "--id", "1", "--port", "\(try freeLoopbackPort())", "--backend", "local",
                                         "--file", file, "--region", region, "--secret", "s"], timeout: 30)
            #expect(result.status != 0)
            #expect(result.stderr.contains(reason), "\(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: file), "nothing was created")
    }
}

/// A generous bound on failover and restart (liveness, not speed): far above the lease TTL, the
/// polling intervals and recovery on a loaded two-core machine.
let failoverLiveness = 10.0

/// The earliest a dead etcd node's locks may go to another node, seconds after its death: it
/// renewed its lease at most TTL/4 before dying and acted until that renewal + TTL - 500 ms.
func etcdNotBefore(ttl: Double) -> Double { ttl - ttl / 4 - 0.5 }
