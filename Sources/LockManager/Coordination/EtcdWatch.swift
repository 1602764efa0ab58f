import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

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
/// newline-separated JSON objects. FoundationNetworking has no `bytes(for:)`, so a data delegate
/// splits the body into lines and feeds them into an `AsyncThrowingStream`; the stream ends (with an
/// error) when the connection does, and cancelling the consumer cancels the request.
enum EtcdWatch {
    static func open(endpoint: URL, key: String, rangeEnd: String, startRevision: Int64) -> AsyncThrowingStream<EtcdWatchResponse, Error> {
        let (stream, continuation) = AsyncThrowingStream<EtcdWatchResponse, Error>.makeStream()
        let delegate = LineDelegate(continuation)
        let cfg = URLSessionConfiguration.ephemeral
        // A watch is idle for as long as nothing changes: no idle limit, the connection's end tells.
        cfg.timeoutIntervalForRequest = 365 * 24 * 3600
        cfg.timeoutIntervalForResource = 365 * 24 * 3600
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let session = URLSession(configuration: cfg, delegate: delegate, delegateQueue: queue)
        var req = URLRequest(url: endpoint.appendingPathComponent("v3/watch"))
        req.httpMethod = "POST"
        req.httpBody = try? JSONSerialization.data(withJSONObject: ["create_request": [
            "key": EtcdCoordination.b64(key), "range_end": EtcdCoordination.b64(rangeEnd), "start_revision": "\(startRevision)",
        ]])
        let task = session.dataTask(with: req)
        // Only cancel the task here: its completion (didCompleteWithError) invalidates the session.
        // Invalidating it here as well races FoundationNetworking's task registry, which traps
        // ("a task that is not in the registry") when a callback of a removed task arrives.
        continuation.onTermination = { _ in task.cancel() }
        task.resume()
        return stream
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

    /// Runs on the session's serial delegate queue only; `buffer` is touched nowhere else.
    private final class LineDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let continuation: AsyncThrowingStream<EtcdWatchResponse, Error>.Continuation
        var buffer = Data()
        var status = 0
        init(_ c: AsyncThrowingStream<EtcdWatchResponse, Error>.Continuation) { continuation = c }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
            status = (response as? HTTPURLResponse)?.statusCode ?? 0
            completionHandler(.allow)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            buffer.append(data)
            while let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[buffer.startIndex..<nl]
                buffer = Data(buffer[(nl + 1)...])
                guard !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) else { continue }
                guard status == 200 else {
                    continuation.finish(throwing: CoordinationError("etcd watch: HTTP \(status) \(String(decoding: line, as: UTF8.self))"))
                    return
                }
                do { continuation.yield(try EtcdWatch.parse(Data(line))) } catch {
                    continuation.finish(throwing: error)
                    return
                }
            }
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
            continuation.finish(throwing: error ?? CoordinationError("etcd watch: the stream ended"))
            session.finishTasksAndInvalidate()
        }
    }
}
