import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Support for tests, benchmarks and tools: children started here are stopped by PID, and every
/// wait has a limit.
public enum ProcessSupport {
    /// A free TCP port on 127.0.0.1 (bound once with port 0, then released).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CoordinationError("socket: \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw CoordinationError("bind: \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Sends `signal` to `pid` and, for a kill, reaps it within `timeout`.
    public static func kill(_ process: Process, signal: Int32 = SIGKILL, timeout: TimeInterval = 5) {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, signal)
        guard signal == SIGKILL || signal == SIGTERM else { return }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    public static func tempDirectory(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A real etcd (Debian `etcd-server`) on free loopback ports in a temporary data directory.
public final class EtcdServer: Sendable {
    public let endpoint: String
    public let process: Process
    public let dataDir: URL
    private let lifeline: Pipe

    public static let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) }

    public init(timeout: TimeInterval = 15) async throws {
        guard let bin = EtcdServer.binary else { throw CoordinationError("etcd not found: install Debian's etcd-server") }
        let client = try ProcessSupport.freePort(), peer = try ProcessSupport.freePort()
        dataDir = try ProcessSupport.tempDirectory("dlm-etcd")
        endpoint = "http://127.0.0.1:\(client)"
        let p = Process()
        // etcd runs under a tiny shell that holds a pipe from us: if this process dies without
        // stopping it (a crash), the pipe closes and the shell kills etcd by its PID. No leak.
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        let lifeline = Pipe()
        p.standardInput = lifeline
        self.lifeline = lifeline
        p.arguments = ["-c", "\"$0\" \"$@\" & e=$!; read _; kill -9 $e; exit 0", bin,
                       "--name", "default", "--data-dir", dataDir.path,
                       "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                       "--listen-peer-urls", "http://127.0.0.1:\(peer)",
                       "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                       "--initial-cluster", "default=http://127.0.0.1:\(peer)",
                       "--log-level", "error"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        process = p
        // Wait for health, with a limit.
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let (data, _) = try? await URLSession.shared.data(from: URL(string: "\(endpoint)/health")!),
               String(decoding: data, as: UTF8.self).contains("true") { return }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        stop()
        throw CoordinationError("etcd did not become healthy within \(timeout) s")
    }

    public func stop() {
        // Closing the lifeline makes the shell kill etcd and exit; SIGKILL only if it does not.
        try? lifeline.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        ProcessSupport.kill(process)
        try? FileManager.default.removeItem(at: dataDir)
    }
}
