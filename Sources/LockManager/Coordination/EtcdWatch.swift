import Foundation

/// One key change a watch reported.
struct EtcdKeyChange: Sendable, Hashable {
    var key: String
    var value: String
    var createRevision: Int64
    var modRevision: Int64
    /// The lease the key is attached to (0: none).
    var lease: Int64
    var deleted: Bool
}

/// One message of a watch stream.
struct EtcdWatchResponse: Sendable {
    var revision: Int64
    var created = false
    var canceled = false
    /// Set when the revision asked for was compacted away: the watcher must read the keys afresh.
    var compactRevision: Int64 = 0
    var changes: [EtcdKeyChange] = []
}

/// A `/v3/watch` call through etcd's JSON gateway: the answer is a never-ending HTTP body of
/// newline-separated JSON objects, one watch response each. The stream ends (with an error) when the
/// connection does; ending the iteration (break, cancellation) closes the connection.
enum EtcdWatch {
    typealias Responses = AsyncThrowingMapSequence<AsyncThrowingStream<Data, Error>, EtcdWatchResponse>

    static func open(_ http: EtcdHTTPClient, key: String, rangeEnd: String, startRevision: Int64) -> Responses {
        // etcd answers a watch at once (its "created" message); 3 s leaves room for a loaded machine.
        http.lines("v3/watch", ["create_request": [
            "key": EtcdCoordination.b64(key), "range_end": EtcdCoordination.b64(rangeEnd), "start_revision": "\(startRevision)",
        ]], timeout: .seconds(3)).map { try parse($0) }
    }

    static func parse(_ line: Data) throws -> EtcdWatchResponse {
        guard let obj = try JSONSerialization.jsonObject(with: line) as? [String: Any] else {
            throw CoordinationError("etcd watch: not a JSON object")
        }
        if let err = obj["error"] { throw CoordinationError("etcd watch: \(err)") }
        let r = (obj["result"] as? [String: Any]) ?? obj
        var out = EtcdWatchResponse(revision: EtcdCoordination.int((r["header"] as? [String: Any])?["revision"]) ?? 0)
        out.created = (r["created"] as? Bool) ?? false
        out.canceled = (r["canceled"] as? Bool) ?? false
        out.compactRevision = EtcdCoordination.int(r["compact_revision"]) ?? 0
        for e in (r["events"] as? [[String: Any]]) ?? [] {
            guard let kv = e["kv"] as? [String: Any], let key = EtcdCoordination.unb64(kv["key"]) else {
                throw CoordinationError("etcd watch: event without a key: \(e)")
            }
            out.changes.append(EtcdKeyChange(key: key, value: EtcdCoordination.unb64(kv["value"]) ?? "",
                                             createRevision: EtcdCoordination.int(kv["create_revision"]) ?? 0,
                                             modRevision: EtcdCoordination.int(kv["mod_revision"]) ?? 0,
                                             lease: EtcdCoordination.int(kv["lease"]) ?? 0,
                                             deleted: (e["type"] as? String) == "DELETE"))
        }
        return out
    }
}
