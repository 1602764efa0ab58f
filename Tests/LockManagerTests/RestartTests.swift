import Foundation
import Testing
import LockManager
import TestSupport
import ClusterTestSupport

/// A node that dies while holding a lock and comes straight back under the same node id: its old
/// locks go to others, not before the old incarnation's fencing deadline, and not never.
@Suite(.serialized) struct RestartTests {
    func restartWhileHolding(backend: [String], leader: () async throws -> Leadership?,
                             members: () async throws -> Set<UInt32>,
                             whileRunning: () async throws -> Void = {}) async throws -> Double {
        let c = try TestCluster("dlm-restart")
        defer { c.stopAll() }
        try c.start(node: 1, backend: backend, workload: nil)
        try await eventually("node 1 to lead") { try await leader()?.node == 1 }
        try c.start(node: 2, backend: backend, workload: "vhd", holdMs: 60_000)
        try await eventually("node 2 to hold the lock") { c.events().contains { $0.kind == "ACQ" && $0.node == 2 } }
        try c.start(node: 3, backend: backend, workload: "vhd", holdMs: 5)
        try await Task.sleep(nanoseconds: 200_000_000)
        let killedAt = monotonicNow()
        c.kill(2)
        try c.start(node: 2, backend: backend, workload: nil)
        try await eventually("node 3 to get the lock", timeout: 20) { c.events().contains { $0.kind == "ACQ" && $0.node == 3 } }
        let granted = c.events().first { $0.kind == "ACQ" && $0.node == 3 }!
        _ = try c.checkMutualExclusion(deaths: [2: killedAt])
        try await eventually("the new node 2 to be a member") { try await members().contains(2) }
        try await whileRunning()
        return Double(granted.time - killedAt) / 1e6
    }

    @Test(.timeLimit(.minutes(1))) func localBackend() async throws {
        let dir = try makeTemporaryDirectory("dlm-restart-local")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lun").path
        let probe = try LocalCoordination(path: file, region: .ownFile, node: 200)
        let ms = try await restartWhileHolding(backend: ["--backend", "local", "--file", file],
                                               leader: { try await probe.leader() }, members: { try await probe.members() })
        // The kernel dropped the dead process's OFD locks at once: it is fenced the instant it dies,
        // so the lock moves after the kill (the mutual-exclusion check), within the liveness bound.
        #expect(ms > 0 && ms < failoverLiveness * 1000, "node 3 was granted \(ms) ms after the kill")
        print("restart (local): node 3 granted \(ms) ms after node 2's SIGKILL")
    }

    @Test(.timeLimit(.minutes(1))) func etcdBackend() async throws {
        let etcd = try await EtcdServer()
        defer { etcd.stop() }
        let probe = try EtcdCoordination(endpoint: etcd.endpoint, volume: "r1", node: 200)
        let ms = try await restartWhileHolding(backend: ["--backend", "etcd", "--etcd", etcd.endpoint, "--volume", "r1", "--ttl", "2"],
                                               leader: { try await probe.leader() }, members: { try await probe.members() }) {
            // The id is live again: a second process with it is refused.
            let duplicate = try EtcdCoordination(endpoint: etcd.endpoint, volume: "r1", node: 2, ttl: 2)
            await #expect(throws: CoordinationError.self) { try await duplicate.start(address: "127.0.0.1:1") }
        }
        // The old incarnation renewed its 2 s lease at most TTL/4 before its death and would have
        // acted until renewal + TTL - 0.5 s: nothing of its may be granted before then.
        #expect(ms >= etcdNotBefore(ttl: 2) * 1000, "node 3 was granted node 2's lock \(ms) ms after the kill, before node 2's fencing deadline")
        #expect(ms < failoverLiveness * 1000, "node 3 was granted node 2's lock only \(ms) ms after the kill")
        print("restart (etcd): node 3 granted \(ms) ms after node 2's SIGKILL")
    }
}
