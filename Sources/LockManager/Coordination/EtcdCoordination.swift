import Foundation
import Primitives

/// The multi-host backend: etcd v3 through its JSON gateway, no client package.
///
/// - A lease with keep-alive; the member key `<prefix>/members/<node>` and, for the leader, the
///   election key `<prefix>/leader` are attached to it, so both vanish when the lease expires.
/// - The epoch is the election key's create revision: every new leader gets a higher one.
/// - One `/v3/watch` on the volume's prefix follows the election key and the members (events, and
///   the answers of `leader()` and `members()`); a node campaigns when it sees the election key gone.
/// - Self-fencing: a keep-alive sent at t and answered with TTL proves the lease lives until
///   t + TTL at the earliest (etcd counts from when it received it). The node stops acting at
///   t + TTL - margin, before etcd can expire the lease and give anything away; the same deadline
///   bounds its LUN writes through `fence`, and a fence closed for any reason fences the node.
public final class EtcdCoordination: CoordinationBackend {
    public let node: UInt32
    let http: EtcdHTTPClient
    let prefix: String
    let ttl: Int
    let margin: UInt64
    /// The node's LUN writes, admitted until the lease's safe deadline.
    let fence: WriteFence?
    struct State {
        var lease: Int64?
        var validUntil: Instant = 0
        var fenced = false
        var started = false
        var leadership: Leadership?
        var address = ""
        var tasks: [Task<Void, Never>] = []
        /// The revision of the newest news of the leader key applied (watch, snapshot or own win).
        var leaderRevision: Int64 = 0
        /// While the watch stream is established, `leader()` and `members()` answer from it.
        var watchSynced = false
    }
    let state = Locked(State())
    let hub = CoordinationEventHub()

    /// - Parameters: endpoint like `http://127.0.0.1:2379`; volume names the key prefix;
    ///   ttl in seconds (etcd's minimum is about 2).
    public init(endpoint: String, volume: String, node: UInt32, ttl: Int = 3, marginMillis: UInt64 = 500,
                fence: WriteFence? = nil) throws {
        self.fence = fence
        http = try EtcdHTTPClient(endpoint: endpoint)
        self.node = node
        self.prefix = "/csvfs/\(volume)"
        self.ttl = ttl
        self.margin = marginMillis * 1_000_000
    }

    // MARK: Gateway calls

    /// One gateway call, at most 1 s; every failure (etcd gone, a dropped connection) is thrown.
    func call(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
        try await http.call(path, body)
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
            let sent = monotonicNow(), sentOnFenceClock = WriteFence.now()
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
                fence?.lease(until: sentOnFenceClock + UInt64(granted) * 1_000_000_000 - margin)
                // The current leader and members first, so a subscriber starts from a full view
                // (if etcd is slow to answer, the watch loop reads them before it watches).
                let revision = try? await loadSnapshot()
                startCampaign(lease: id, address: address, from: revision)
                return
            }
            _ = try? await call("v3/lease/revoke", ["ID": "\(id)"])
            guard monotonicNow() < deadline else {
                throw CoordinationError("node \(node) is already a live member of \(prefix): another process keeps its key alive")
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    private var leaderKey: String { "\(prefix)/leader" }
    private var memberPrefix: String { "\(prefix)/members/" }

    private func startCampaign(lease id: Int64, address: String, from revision: Int64?) {
        let keepAlive = Task { [weak self] () -> Void in await self?.keepAliveLoop(lease: id, address: address) }
        let watch = Task { [weak self] () -> Void in await self?.watchLoop(lease: id, address: address, from: revision) }
        state.withLock { $0.tasks = [keepAlive, watch] }
    }

    /// Renews the lease every TTL/4 and wakes at the lease's safe deadline, so the node fences
    /// itself (and says so) at that moment, not at its next renewal. After each renewal it also
    /// campaigns if the seat is still vacant (a campaign the watch triggered may have failed).
    private func keepAliveLoop(lease: Int64, address: String) async {
        let period = UInt64(ttl) * 1_000_000_000 / 4
        var next: Instant = 0
        while !Task.isCancelled {
            if isFenced() { return }
            let now = monotonicNow()
            if now >= next {
                next = now + period
                await keepAlive(lease: lease)
                await campaignIfVacant(lease: lease, address: address)
                continue
            }
            let wake = min(next, state.withLock { $0.validUntil })
            if wake > now { try? await Task.sleep(nanoseconds: wake - now) }
        }
    }

    private func keepAlive(lease: Int64) async {
        let sent = monotonicNow(), sentOnFenceClock = WriteFence.now()
        guard let r = try? await call("v3/lease/keepalive", ["ID": "\(lease)"]),
              let t = Self.int(r["TTL"]), t > 0 else { return }
        state.withLock { s in
            // A renewal that comes back after the deadline passed does not revive the node.
            if fenceIfLapsed(&s) { return }
            let until = sent + UInt64(t) * 1_000_000_000 - margin
            if until > s.validUntil { s.validUntil = until }
            // Under the state lock: the fence is extended only while the node is not fenced.
            fence?.lease(until: sentOnFenceClock + UInt64(t) * 1_000_000_000 - margin)
        }
    }

    // MARK: Watch

    /// Reads the leader key and the members under the prefix; returns the revision read at.
    private func loadSnapshot() async throws -> Int64 {
        let r = try await call("v3/kv/range", ["key": Self.b64("\(prefix)/"), "range_end": Self.b64("\(prefix)0")])
        guard let revision = Self.int((r["header"] as? [String: Any])?["revision"]) else { throw CoordinationError("etcd range without a revision: \(r)") }
        var leader: Leadership?
        var leaderLease: Int64 = 0
        var members = Set<UInt32>()
        for kv in (r["kvs"] as? [[String: Any]]) ?? [] {
            guard let key = Self.unb64(kv["key"]) else { continue }
            if key == leaderKey {
                leader = Self.leadership(Self.unb64(kv["value"]) ?? "", epoch: Self.int(kv["create_revision"]) ?? 0)
                leaderLease = Self.int(kv["lease"]) ?? 0
            } else if key.hasPrefix(memberPrefix), let n = UInt32(key.dropFirst(memberPrefix.count)) {
                members.insert(n)
            }
        }
        state.withLock { s -> Void in
            hub.update { v in
                observeLeader(leader, lease: leaderLease, at: revision, &s, &v)
                v.members = members
            }
        }
        return revision
    }

    /// Follows the leader key and the member keys with one watch on the volume's prefix; after a
    /// broken stream it resumes from the revision after the last one applied (or reads the keys
    /// afresh when etcd compacted that revision away). Campaigns whenever the leader key is absent.
    private func watchLoop(lease: Int64, address: String, from start: Int64?) async {
        var revision = start ?? 0
        var needSnapshot = start == nil
        while !Task.isCancelled {
            do {
                if needSnapshot {
                    revision = try await loadSnapshot()
                    needSnapshot = false
                }
                await campaignIfVacant(lease: lease, address: address)
                for try await r in EtcdWatch.open(http, key: "\(prefix)/", rangeEnd: "\(prefix)0", startRevision: revision + 1) {
                    if r.canceled {
                        needSnapshot = true
                        break
                    }
                    if r.created { state.withLock { $0.watchSynced = true } }
                    guard !r.changes.isEmpty else { continue }
                    apply(r.changes)
                    revision = max(revision, r.changes.map(\.modRevision).max() ?? revision)
                    await campaignIfVacant(lease: lease, address: address)
                }
            } catch {}
            state.withLock { $0.watchSynced = false }
            if Task.isCancelled { return }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    private func apply(_ changes: [EtcdKeyChange]) {
        state.withLock { s -> Void in
            hub.update { v in
                for c in changes {
                    if c.key == leaderKey {
                        observeLeader(c.deleted ? nil : Self.leadership(c.value, epoch: c.createRevision), lease: c.deleted ? 0 : c.lease,
                                      at: c.modRevision, &s, &v)
                    } else if c.key.hasPrefix(memberPrefix), let n = UInt32(c.key.dropFirst(memberPrefix.count)) {
                        if c.deleted { v.members.remove(n) } else { v.members.insert(n) }
                    }
                }
            }
        }
    }

    /// The leader key as of `revision`. Older news than what this node already knows (its own win is
    /// known from the transaction, before the watch brings it) is ignored; newer news that names
    /// another leader, or none, ends this node's own leadership. A key on this node's lease is its
    /// own win even if the transaction's answer was lost (a timeout after etcd applied it).
    private func observeLeader(_ leader: Leadership?, lease: Int64, at revision: Int64, _ s: inout State, _ v: inout CoordinationView) {
        guard revision >= s.leaderRevision else { return }
        s.leaderRevision = revision
        if let mine = s.leadership, leader != mine {
            s.leadership = nil
            v.own = nil
        }
        // Inside the hub's update: the fence check must not publish (the deadline is re-checked by
        // isFenced() soon anyway, which publishes).
        if let leader, s.leadership == nil, lease != 0, lease == s.lease, !s.fenced, monotonicNow() < s.validUntil {
            s.leadership = leader
            v.own = leader
        }
        v.leader = leader
    }

    static func leadership(_ value: String, epoch: Int64) -> Leadership? {
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, let n = UInt32(parts[0]), epoch > 0 else { return nil }
        return Leadership(node: n, address: String(parts[1]), epoch: Epoch(epoch))
    }

    /// Creates the election key if the watch says nobody holds it; the epoch is its create revision.
    private func campaignIfVacant(lease: Int64, address: String) async {
        guard !isFenced(), state.withLock({ $0.leadership == nil }), hub.view.leader == nil else { return }
        let key = Self.b64(leaderKey)
        guard let r = try? await call("v3/kv/txn", [
            "compare": [["key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"]],
            "success": [["request_put": ["key": key, "value": Self.b64("\(node) \(address)"), "lease": "\(lease)"]]],
        ]) else { return }
        guard (r["succeeded"] as? Bool) == true, let rev = Self.int((r["header"] as? [String: Any])?["revision"]) else { return }
        state.withLock { s in
            guard !fenceIfLapsed(&s), rev >= s.leaderRevision else { return }
            let mine = Leadership(node: node, address: address, epoch: Epoch(rev))
            s.leadership = mine
            s.leaderRevision = rev
            hub.update { $0.own = mine }
        }
    }

    public func leader() async throws -> Leadership? {
        if let mine = ownLeadership() { return mine }
        if state.withLock({ $0.watchSynced }) { return hub.view.leader }
        let r = try await call("v3/kv/range", ["key": Self.b64("\(prefix)/leader")])
        guard let kv = (r["kvs"] as? [[String: Any]])?.first, let v = Self.unb64(kv["value"]),
              let rev = Self.int(kv["create_revision"]) else { return nil }
        return Self.leadership(v, epoch: rev)
    }

    public func ownLeadership() -> Leadership? {
        if isFenced() { return nil }
        return state.withLock { $0.leadership }
    }

    /// From the watch while it is connected (no request at all), else read from etcd.
    public func members() async throws -> Set<UInt32> {
        if state.withLock({ $0.watchSynced }) { return hub.view.members }
        let p = "\(prefix)/members/"
        let r = try await call("v3/kv/range", ["key": Self.b64(p), "range_end": Self.b64(p.dropLast() + "0")])
        var out = Set<UInt32>()
        for kv in (r["kvs"] as? [[String: Any]]) ?? [] {
            if let k = Self.unb64(kv["key"]), let n = UInt32(k.dropFirst(p.count)) { out.insert(n) }
        }
        return out
    }

    /// Once the lease's safe lifetime has passed without a renewal, the node is fenced for good.
    public func isFenced() -> Bool { state.withLock { fenceIfLapsed(&$0) } }

    private func fenceIfLapsed(_ s: inout State) -> Bool {
        if s.fenced { return true }
        // The fence's clock counts a host's sleep, this one does not: whichever says so first ends the lease.
        guard s.started, monotonicNow() >= s.validUntil || fence?.isClosed == true else { return false }
        fence?.lapse()
        s.fenced = true
        s.leadership = nil
        hub.update { $0.fenced = true }
        return true
    }

    public func events() -> AsyncStream<CoordinationEvent> { hub.subscribe() }

    public func stop() async {
        let (tasks, lease) = state.withLock { s -> ([Task<Void, Never>], Int64?) in
            let t = s.tasks
            s.tasks = []
            s.fenced = true
            s.leadership = nil
            hub.finish { $0.fenced = true }
            return (t, s.lease)
        }
        // Before the revoke: once etcd drops the lease, what this node held may be given away.
        if lease != nil { fence?.close("left the cluster (lease given up)", expected: true) }
        for t in tasks { t.cancel() }
        if let lease { _ = try? await call("v3/lease/revoke", ["ID": "\(lease)"]) }
    }
}
