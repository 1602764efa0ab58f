import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import ClusterTestSupport
import LockManager
import NIOPosix
import Logging
import TestSupport

/// Acquire+release latency and throughput of our DLM against etcd's own lock (`/v3/lock`), same
/// machine, same run, same number of concurrent clients; then failover times.
/// Starts everything it needs: a master node process, an in-process client node, an etcd.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmark the DLM against etcd's lock.")
    @Option(help: "Concurrent clients.") var clients: Int = 8
    @Option(help: "Acquire+release cycles per client for the DLM.") var ops: Int = 2000
    @Option(help: "Acquire+release cycles per client for etcd.") var etcdOps: Int = 100
    @Flag(help: "Skip the failover measurements.") var noFailover = false
    @Flag(help: "Skip the comparison with etcd's lock.") var noEtcd = false
    @Option(help: "Comma-separated numbers of other locks held in the table while measuring, e.g. 0,100000,1000000.")
    var held: String = "0"

    func run() async throws {
        let dir = try makeTemporaryDirectory("dlm-bench")
        defer { try? FileManager.default.removeItem(at: dir) }
        let secret = "bench-secret"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "dlm.bench")
        logger.logLevel = .warning

        // Our DLM: master in a child process, clients in this one (real TCP on loopback).
        let file = dir.appendingPathComponent("lun").path
        let masterPort = try freeLoopbackPort()
        let master = try spawnNode(id: 1, port: masterPort, args: ["--backend", "local", "--file", file], secret: secret, in: dir)
        defer { master.kill() }
        let probe = try LocalCoordination(path: file, region: .ownFile, node: 200)
        try await waitFor("node 1 to lead") { try await probe.leader() != nil }
        let me = DLMNode(coordination: try LocalCoordination(path: file, region: .ownFile, node: 2), secret: ClusterSecret(secret),
                         port: try freeLoopbackPort(), group: group, logger: logger)
        try await me.start()
        _ = try await me.client.listing()
        // Honest numbers: the master must be the other process, reached over TCP.
        guard !me.isMaster, try await probe.leader()?.node == 1 else {
            throw ValidationError("the bench's own node became the master; the figures would not cross processes")
        }
        print("master: node 1, pid \(master.pid), 127.0.0.1:\(masterPort); clients: node 2, pid \(getpid()), over TCP")
        let cycle: @Sendable (Int) async throws -> Void = { i in
            let (h, _) = try await me.client.lock("bench-\(i)", mode: .ex, timeout: .seconds(10))
            try await me.client.unlock(h)
        }
        // The callers run on the client's event loop (no thread hop per message in this process);
        // then, for reference, the same from tasks on Swift's cooperative pool.
        let levels = held.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !levels.isEmpty, levels.allSatisfy({ $0 >= 0 }) else { throw ValidationError("--held wants numbers like 0,100000,1000000") }
        let dlm: Stats
        if levels == [0] {
            dlm = try await measure(clients: clients, ops: ops, on: me.client.executor, cycle)
        } else {
            let filler = DLMNode(coordination: try LocalCoordination(path: file, region: .ownFile, node: 3), secret: ClusterSecret(secret),
                                 port: try freeLoopbackPort(), group: group, logger: logger)
            try await filler.start()
            defer { Task { await filler.stop() } }
            let rows = try await HeldLocksBench(masterPID: master.pid, filler: filler.client).run(levels: levels) {
                try await measure(clients: clients, ops: ops, on: me.client.executor, cycle)
            }
            dlm = rows[0].stats
        }
        let pool = try await measure(clients: clients, ops: ops, on: nil, cycle)
        print("dlm_pool_p50_us=\(pool.p50) dlm_pool_p99_us=\(pool.p99) dlm_pool_ops_s=\(pool.opsPerSecond) (callers on the cooperative pool)")
        guard !noEtcd else {
            await me.stop()
            print("clients=\(clients) dlm_ops=\(clients * ops)")
            print("dlm_p50_us=\(dlm.p50) dlm_p99_us=\(dlm.p99) dlm_ops_s=\(dlm.opsPerSecond)")
            return
        }

        // etcd's lock through the same JSON gateway, each client with its own lease.
        let etcd = try await EtcdServer()
        defer { etcd.stop() }
        let gw = EtcdGateway(endpoint: etcd.endpoint, connections: clients)
        var leases: [Int64] = []
        for _ in 0..<clients { leases.append(try await gw.lease(ttl: 60)) }
        let etcdStats = try await measure(clients: clients, ops: etcdOps, on: nil) { [leases] i in
            let key = try await gw.lock(name: "bench-\(i)", lease: leases[i])
            try await gw.unlock(key: key)
        }

        if !noFailover {
            let local = try await failover(victim: master, node: me, resource: "failover-local")
            print(String(format: "failover_local_ms=%.1f (master SIGKILL to first new grant, local backend)", local))
            let etcdFailover = try await failoverEtcd(etcd: etcd, group: group, secret: secret)
            print(String(format: "failover_etcd_ms=%.1f (master SIGKILL to first new grant, etcd backend, lease TTL 2 s)", etcdFailover))
        }
        await me.stop()
        print("clients=\(clients) dlm_ops=\(clients * ops) etcd_ops=\(clients * etcdOps)")
        print("dlm_p50_us=\(dlm.p50) dlm_p99_us=\(dlm.p99) dlm_ops_s=\(dlm.opsPerSecond) etcd_p50_us=\(etcdStats.p50) etcd_p99_us=\(etcdStats.p99) etcd_ops_s=\(etcdStats.opsPerSecond)")
    }

    struct Stats { var p50: Int; var p99: Int; var opsPerSecond: Int }

    func measure(clients: Int, ops: Int, on executor: (any TaskExecutor)?,
                 _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Stats {
        for i in 0..<clients { try await body(i) }   // warm-up: connections, first resources
        let start = monotonicNow()
        let samples = try await withThrowingTaskGroup(of: [UInt64].self) { g in
            for i in 0..<clients {
                g.addTask(executorPreference: executor) {
                    var s: [UInt64] = []
                    s.reserveCapacity(ops)
                    for _ in 0..<ops {
                        let t = monotonicNow()
                        try await body(i)
                        s.append(monotonicNow() - t)
                    }
                    return s
                }
            }
            var all: [UInt64] = []
            for try await s in g { all += s }
            return all.sorted()
        }
        let seconds = Double(monotonicNow() - start) / 1e9
        return Stats(p50: Int(samples[samples.count / 2] / 1000), p99: Int(samples[samples.count * 99 / 100] / 1000),
                     opsPerSecond: Int(Double(samples.count) / seconds))
    }

    /// Kill the master process while this node takes and releases a lock in a loop; time from the
    /// SIGKILL to the first grant by the new master.
    func failover(victim: ChildProcess, node: DLMNode, resource: String) async throws -> Double {
        let (h, _) = try await node.client.lock(resource, mode: .ex, timeout: .seconds(5))
        try await node.client.unlock(h)
        let killedAt = monotonicNow()
        victim.kill()
        let before = node.client.epoch
        let deadline = killedAt + 30_000_000_000
        while monotonicNow() < deadline {
            do {
                let (h, _) = try await node.client.lock(resource, mode: .ex, timeout: .seconds(10))
                let at = monotonicNow()
                try await node.client.unlock(h)
                if node.client.epoch != before { return Double(at - killedAt) / 1e6 }
            } catch { try await Task.sleep(nanoseconds: 1_000_000) }
        }
        throw ValidationError("no grant within 30 s of the master's death")
    }

    func failoverEtcd(etcd: EtcdServer, group: MultiThreadedEventLoopGroup, secret: String) async throws -> Double {
        var quiet = Logger(label: "dlm.bench")
        quiet.logLevel = .warning
        let volume = "failover"
        let master = try spawnNode(id: 11, port: try freeLoopbackPort(),
                                   args: ["--backend", "etcd", "--etcd", etcd.endpoint, "--volume", volume, "--ttl", "2"], secret: secret,
                                   in: etcd.dataDir)
        defer { master.kill() }
        let probe = try EtcdCoordination(endpoint: etcd.endpoint, volume: volume, node: 200)
        try await waitFor("node 11 to lead") { try await probe.leader()?.node == 11 }
        let me = DLMNode(coordination: try EtcdCoordination(endpoint: etcd.endpoint, volume: volume, node: 12, ttl: 2),
                         secret: ClusterSecret(secret), port: try freeLoopbackPort(), group: group, logger: quiet)
        try await me.start()
        defer { Task { await me.stop() } }
        return try await failover(victim: master, node: me, resource: "failover-etcd")
    }

    /// A node process of this same dlmtool, its output in `directory`.
    func spawnNode(id: Int, port: Int, args: [String], secret: String, in directory: URL) throws -> ChildProcess {
        var executable = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).resolvingSymlinksInPath()
        if !FileManager.default.isExecutableFile(atPath: executable.path), let main = Bundle.main.executableURL { executable = main }
        return try ChildProcess(executable.path, ["node", "--id", "\(id)", "--port", "\(port)", "--exit-with-parent"] + args,
                                environment: ["DLM_SECRET": secret], outputDirectory: directory)
    }

    func waitFor(_ what: String, timeout: Double = 15, _ cond: () async throws -> Bool) async throws {
        let deadline = monotonicNow() + UInt64(timeout * 1e9)
        while monotonicNow() < deadline {
            if (try? await cond()) == true { return }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        throw ValidationError("timed out waiting for \(what)")
    }
}

/// etcd's lock service through the JSON gateway, for the comparison.
struct EtcdGateway: Sendable {
    let endpoint: String
    let session: URLSession
    init(endpoint: String, connections: Int) {
        self.endpoint = endpoint
        let cfg = URLSessionConfiguration.ephemeral
        cfg.httpMaximumConnectionsPerHost = connections
        cfg.timeoutIntervalForRequest = 10
        session = URLSession(configuration: cfg)
    }
    func post(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
        var req = URLRequest(url: URL(string: "\(endpoint)/\(path)")!)
        req.httpMethod = "POST"
        req.httpBody = try JSONSerialization.data(withJSONObject: body)
        let (data, resp) = try await session.data(for: req)
        guard (resp as? HTTPURLResponse)?.statusCode == 200,
              let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ValidationError("etcd \(path) failed: \(String(decoding: data, as: UTF8.self))")
        }
        return obj
    }
    func lease(ttl: Int) async throws -> Int64 {
        let r = try await post("v3/lease/grant", ["TTL": ttl])
        guard let s = r["ID"] as? String, let id = Int64(s) else { throw ValidationError("lease grant: \(r)") }
        return id
    }
    func lock(name: String, lease: Int64) async throws -> String {
        let r = try await post("v3/lock/lock", ["name": Data(name.utf8).base64EncodedString(), "lease": "\(lease)"])
        guard let key = r["key"] as? String else { throw ValidationError("lock: \(r)") }
        return key
    }
    func unlock(key: String) async throws {
        _ = try await post("v3/lock/unlock", ["key": key])
    }
}
