import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import TestSupport

/// A real etcd (Debian `etcd-server`) on free loopback ports in a temporary data directory, for the
/// cluster's tests and `dlmtool bench`; stopped by PID.
public final class EtcdServer: Sendable {
    public let endpoint: String
    public let dataDir: URL
    private let child: ChildProcess

    public static let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) }

    public init(timeout: TimeInterval = 15) async throws {
        guard let bin = EtcdServer.binary else { throw ProcessFailure("etcd not found: install Debian's etcd-server") }
        let client = try freeLoopbackPort(), peer = try freeLoopbackPort()
        dataDir = try makeTemporaryDirectory("dlm-etcd")
        endpoint = "http://127.0.0.1:\(client)"
        // etcd runs under a tiny shell that reads our lifeline: if this process dies without stopping
        // it (a crash), the pipe closes and the shell kills etcd by its PID. No leak.
        child = try ChildProcess("/bin/sh", ["-c", "\"$0\" \"$@\" & e=$!; read _; kill -9 $e; exit 0", bin,
                                             "--name", "default", "--data-dir", dataDir.path,
                                             "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                                             "--listen-peer-urls", "http://127.0.0.1:\(peer)",
                                             "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                                             "--initial-cluster", "default=http://127.0.0.1:\(peer)",
                                             "--log-level", "error"],
                             outputDirectory: dataDir, lifeline: true)
        // Wait for health, with a limit.
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let (data, _) = try? await URLSession.shared.data(from: URL(string: "\(endpoint)/health")!),
               String(decoding: data, as: UTF8.self).contains("true") { return }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        let why = child.stderrText
        stop()
        throw ProcessFailure("etcd did not become healthy within \(timeout) s: \(why.suffix(600))")
    }

    public func stop() {
        // Closing the lifeline makes the shell kill etcd and exit; SIGKILL only if it does not.
        child.closeLifeline()
        if child.wait(timeout: 5) == nil { child.kill() }
        try? FileManager.default.removeItem(at: dataDir)
    }
}
