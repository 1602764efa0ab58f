import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The multi-host backend: etcd v3 through its JSON gateway, no client package.
///
/// - A lease with keep-alive; the member key `<prefix>/members/<node>` and, for the leader, the
///   election key `<prefix>/leader` are attached to it, so both vanish when the lease expires.
/// - The epoch is the election key's create revision: every new leader gets a higher one.
/// - Self-fencing: a keep-alive sent at t and answered with TTL proves the lease lives until
///   t + TTL at the earliest (etcd counts from when it received it). The node stops acting at
///   t + TTL - margin, before etcd can expire the lease and give anything away.
public final class EtcdCoordination: CoordinationBackend {
    public let node: UInt32
    let endpoint: URL
    let prefix: String
    let ttl: Int
    let margin: UInt64
    let session: URLSession
    struct State {
        var lease: Int64?
        var validUntil: Instant = 0
        var fenced = false
        var started = false
        var leadership: Leadership?
        var address = ""
        var task: Task<Void, Never>?
    }
    let state = Locked(State())

    /// - Parameters: endpoint like `http://127.0.0.1:2379`; volume names the key prefix;
    ///   ttl in seconds (etcd's minimum is about 2).
    public init(endpoint: String, volume: String, node: UInt32, ttl: Int = 3, marginMillis: UInt64 = 500) throws {
        guard let url = URL(string: endpoint) else { throw CoordinationError("bad etcd endpoint \(endpoint)") }
        self.endpoint = url
        self.node = node
        self.prefix = "/csvfs/\(volume)"
        self.ttl = ttl
        self.margin = marginMillis * 1_000_000
        let cfg = URLSessionConfiguration.ephemeral
        cfg.timeoutIntervalForRequest = 1
        cfg.httpMaximumConnectionsPerHost = 4
        session = URLSession(configuration: cfg)
    }

    // MARK: Gateway calls

    func call(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
        var req = URLRequest(url: endpoint.appendingPathComponent(path))
        req.httpMethod = "POST"
        req.httpBody = try JSONSerialization.data(withJSONObject: body)
        req.timeoutInterval = 1
        let (data, resp) = try await session.data(for: req)
        guard let http = resp as? HTTPURLResponse, http.statusCode == 200 else {
            throw CoordinationError("etcd \(path): HTTP \((resp as? HTTPURLResponse)?.statusCode ?? 0) \(String(decoding: data, as: UTF8.self))")
        }
        // The gateway streams some answers as {"result": {...}}.
        guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw CoordinationError("etcd \(path): not JSON") }
        if let err = obj["error"] { throw CoordinationError("etcd \(path): \(err)") }
        return (obj["result"] as? [String: Any]) ?? obj
    }

    static func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }
    static func unb64(_ s: Any?) -> String? {
        guard let s = s as? String, let d = Data(base64Encoded: s) else { return nil }
        return String(decoding: d, as: UTF8.self)
    }
    static func int(_ v: Any?) -> Int64? {
        if let s = v as? String { return Int64(s) }
        if let n = v as? NSNumber { return n.int64Value }
        return nil
    }

    // MARK: Lifecycle

    /// Joins as a member. A node id is live at most once: the member key is created only if absent.
    /// A node restarted right after a crash finds its previous incarnation's key, attached to a lease
    /// that nobody renews any more, and waits for it to lapse (at most the TTL): only then does the
    /// master see the old incarnation leave and purge its locks, after its fencing deadline, as for
    /// any dead node. A key still there after TTL + 2 s belongs to a live process: refused.
    public func start(address: String) async throws {
        let memberKey = Self.b64("\(prefix)/members/\(node)")
        let deadline = monotonicNow() + UInt64(ttl + 2) * 1_000_000_000
        while true {
            let sent = monotonicNow()
            let grant = try await call("v3/lease/grant", ["TTL": ttl])
            guard let id = Self.int(grant["ID"]), let granted = Self.int(grant["TTL"]) else { throw CoordinationError("lease grant: \(grant)") }
            let r = try await call("v3/kv/txn", [
                "compare": [["key": memberKey, "target": "CREATE", "result": "EQUAL", "create_revision": "0"]],
                "success": [["request_put": ["key": memberKey, "value": Self.b64(address), "lease": "\(id)"]]],
            ])
            if (r["succeeded"] as? Bool) == true {
                state.withLock {
                    $0.lease = id
                    $0.validUntil = sent + UInt64(granted) * 1_000_000_000 - margin
                    $0.address = address
                    $0.started = true
                }
                startCampaign(lease: id, address: address)
                return
            }
            _ = try? await call("v3/lease/revoke", ["ID": "\(id)"])
            guard monotonicNow() < deadline else {
                throw CoordinationError("node \(node) is already a live member of \(prefix): another process keeps its key alive")
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    private func startCampaign(lease id: Int64, address: String) {
        let task = Task { [weak self] in
            var lastKeepAlive: Instant = 0
            while !Task.isCancelled {
                guard let self else { return }
                if self.isFenced() { return }
                let now = monotonicNow()
                if now - lastKeepAlive >= UInt64(self.ttl) * 1_000_000_000 / 4 {
                    lastKeepAlive = now
                    await self.keepAlive(lease: id)
                }
                await self.campaign(lease: id, address: address)
                try? await Task.sleep(nanoseconds: 50_000_000)
            }
        }
        state.withLock { $0.task = task }
    }

    private func keepAlive(lease: Int64) async {
        let sent = monotonicNow()
        guard let r = try? await call("v3/lease/keepalive", ["ID": "\(lease)"]),
              let t = Self.int(r["TTL"]), t > 0 else { return }
        state.withLock { s in
            let until = sent + UInt64(t) * 1_000_000_000 - margin
            if !s.fenced, until > s.validUntil { s.validUntil = until }
        }
    }

    /// Try to create the election key if absent; learn the epoch when we hold it.
    private func campaign(lease: Int64, address: String) async {
        guard state.withLock({ $0.leadership == nil }) else { return }
        let key = Self.b64("\(prefix)/leader")
        let value = Self.b64("\(node) \(address)")
        // While someone leads, a read (no raft log entry, no WAL fsync) is enough; the
        // transaction, a raft write even when its compare fails, is only tried when the key is gone.
        guard let seen = try? await call("v3/kv/range", ["key": key, "count_only": true]),
              (Self.int(seen["count"]) ?? 0) == 0 else { return }
        guard let r = try? await call("v3/kv/txn", [
            "compare": [["key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"]],
            "success": [["request_put": ["key": key, "value": value, "lease": "\(lease)"]]],
        ]) else { return }
        guard (r["succeeded"] as? Bool) == true, let rev = Self.int((r["header"] as? [String: Any])?["revision"]) else { return }
        state.withLock { s in
            if !s.fenced { s.leadership = Leadership(node: node, address: address, epoch: Epoch(rev)) }
        }
    }

    public func leader() async throws -> Leadership? {
        if let mine = ownLeadership() { return mine }
        let r = try await call("v3/kv/range", ["key": Self.b64("\(prefix)/leader")])
        guard let kv = (r["kvs"] as? [[String: Any]])?.first, let v = Self.unb64(kv["value"]),
              let rev = Self.int(kv["create_revision"]) else { return nil }
        let parts = v.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, let n = UInt32(parts[0]) else { return nil }
        return Leadership(node: n, address: String(parts[1]), epoch: Epoch(rev))
    }

    public func ownLeadership() -> Leadership? {
        if isFenced() { return nil }
        return state.withLock { $0.leadership }
    }

    public func members() async throws -> Set<UInt32> {
        let p = "\(prefix)/members/"
        let r = try await call("v3/kv/range", ["key": Self.b64(p), "range_end": Self.b64(p.dropLast() + "0")])
        var out = Set<UInt32>()
        for kv in (r["kvs"] as? [[String: Any]]) ?? [] {
            if let k = Self.unb64(kv["key"]), let n = UInt32(k.dropFirst(p.count)) { out.insert(n) }
        }
        return out
    }

    /// Once the lease's safe lifetime has passed without a renewal, the node is fenced for good.
    public func isFenced() -> Bool {
        state.withLock { s in
            if s.fenced { return true }
            if s.started, monotonicNow() >= s.validUntil {
                s.fenced = true
                s.leadership = nil
            }
            return s.fenced
        }
    }

    public func stop() async {
        let (task, lease) = state.withLock { s -> (Task<Void, Never>?, Int64?) in
            let t = s.task
            s.task = nil
            s.fenced = true
            s.leadership = nil
            return (t, s.lease)
        }
        task?.cancel()
        if let lease { _ = try? await call("v3/lease/revoke", ["ID": "\(lease)"]) }
    }
}
