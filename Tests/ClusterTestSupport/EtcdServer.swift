import Foundation
import Glibc
import TestSupport

/// A real etcd (Debian `etcd-server`) on free loopback ports in a temporary data directory, for the
/// cluster's tests and `dlmtool bench`; stopped by PID.
public final class EtcdServer: Sendable {
    public let endpoint: String
    public let dataDir: URL
    private let child: ChildProcess

    public static let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) }

    public init(timeout: TimeInterval = 15) async throws {
        (endpoint, dataDir, child) = try await Self.launch(timeout: timeout)
    }

    /// Starts etcd on free loopback ports and waits for its health. A free port may be taken again before etcd
    /// binds it (another test's socket): then it tries new ones.
    private static func launch(timeout: TimeInterval) async throws -> (String, URL, ChildProcess) {
        guard let bin = EtcdServer.binary else { throw ProcessFailure("etcd not found: install Debian's etcd-server") }
        var why = ""
        for _ in 1...3 {
            let client = try freeLoopbackPort(), peer = try freeLoopbackPort()
            let directory = try makeTemporaryDirectory("dlm-etcd")
            let endpoint = "http://127.0.0.1:\(client)"
            // etcd runs under a tiny shell that reads our lifeline: if this process dies without stopping
            // it (a crash), the pipe closes and the shell kills etcd by its PID. No leak.
            let child = try ChildProcess("/bin/sh", ["-c", "\"$0\" \"$@\" & e=$!; read _; kill -9 $e; exit 0", bin,
                                                     "--name", "default", "--data-dir", directory.path,
                                                     "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                                                     "--listen-peer-urls", "http://127.0.0.1:\(peer)",
                                                     "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                                                     "--initial-cluster", "default=http://127.0.0.1:\(peer)",
                                                     "--log-level", "error"],
                                         outputDirectory: directory, lifeline: true)
            // Wait for health, with a limit.
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if healthy(port: client) { return (endpoint, directory, child) }
                if child.stderrText.contains("address already in use") { break }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
            why = child.stderrText
            stop(child, directory)
            guard why.contains("address already in use") else { break }
        }
        throw ProcessFailure("etcd did not become healthy within \(timeout) s: \(why.suffix(600))")
    }

    /// An etcd on `host` of a test network, at `host.address:2379`. Its health is asked from inside the host's
    /// namespace (this process's own sockets cannot reach it).
    public init(on host: TestNetwork.Host, network: TestNetwork, timeout: TimeInterval = 15) throws {
        guard let bin = EtcdServer.binary else { throw ProcessFailure("etcd not found: install Debian's etcd-server") }
        dataDir = try makeTemporaryDirectory("dlm-etcd")
        endpoint = "http://\(host.address):2379"
        let peer = "http://\(host.address):2380"
        child = try network.start(on: host, "/bin/sh", ["-c", "\"$0\" \"$@\" & e=$!; read _; kill -9 $e; exit 0", bin,
                                                         "--name", "default", "--data-dir", dataDir.path,
                                                         "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                                                         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                                         "--initial-cluster", "default=\(peer)", "--log-level", "error"],
                                  outputDirectory: dataDir, lifeline: true)
        let probe = "import sys, urllib.request; sys.exit(0 if b'true' in urllib.request.urlopen(sys.argv[1], timeout=1).read() else 1)"
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if (try? network.run(on: host, "/usr/bin/python3", ["-c", probe, endpoint + "/health"], timeout: 5))?.succeeded == true { return }
            usleep(100_000)
        }
        let why = child.stderrText
        stop()
        throw ProcessFailure("etcd on \(host.address) did not become healthy within \(timeout) s: \(why.suffix(600))")
    }

    /// `GET /health` over a plain blocking socket with a timeout. Not URLSession: FoundationNetworking
    /// (Swift 6.3.1) traps with "Transfer completed, but there's no response" when a connection closes
    /// right after the request, which a starting etcd can do (swift-corelibs-foundation #5285).
    static func healthy(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return false }
        let request = Array("GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return false }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        while reply.count < 16_384 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            reply += chunk[0..<n]
        }
        let text = String(decoding: reply, as: UTF8.self)
        return text.hasPrefix("HTTP/1.") && text.contains("200") && text.contains("\"health\":\"true\"")
    }

    public func stop() { Self.stop(child, dataDir) }

    private static func stop(_ child: ChildProcess, _ dataDir: URL) {
        // Closing the lifeline makes the shell kill etcd and exit; SIGKILL only if it does not.
        child.closeLifeline()
        if child.wait(timeout: 5) == nil { child.kill() }
        try? FileManager.default.removeItem(at: dataDir)
    }
}
