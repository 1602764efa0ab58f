import Foundation
import LockManager
import TestSupport

/// Helpers for multi-process tests: node processes of the real `dlmtool`, stopped by PID.
final class TestCluster {
    let dir: URL
    let log: URL
    let secret = "test-secret-\(UInt32.random(in: 0...UInt32.max))"
    var nodes: [UInt32: ChildProcess] = [:]
    /// The master port each node was started with.
    var ports: [UInt32: Int] = [:]

    init(_ name: String) throws {
        dir = try makeTemporaryDirectory(name)
        log = dir.appendingPathComponent("events.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
    }

    /// The dlmtool built beside this test bundle (`swift build` builds it; CI runs that first).
    static func dlmtool() throws -> URL {
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for candidate in [here, here.deletingLastPathComponent()] {
            let u = candidate.appendingPathComponent("dlmtool")
            if FileManager.default.isExecutableFile(atPath: u.path) { return u }
        }
        throw ModelFailure("dlmtool not found next to \(here.path): run `swift build --product dlmtool` (same scratch path) before the tests")
    }

    /// Runs `dlmtool` to its end (commands that end by themselves, with their own timeouts):
    /// its exit status and standard output.
    static func run(_ arguments: [String], timeout: TimeInterval = 120) throws -> (status: Int32, output: String) {
        let result = try runProcess(try dlmtool().path, arguments, timeout: timeout)
        return (result.status, result.stdout)
    }

    func start(node id: UInt32, backend: [String], workload: String? = "vhd", holdMs: Int = 3, extra: [String] = []) throws {
        let port = try freeLoopbackPort()
        ports[id] = port
        var args = ["node", "--id", "\(id)", "--port", "\(port)", "--exit-with-parent"] + backend + extra
        if let workload { args += ["--workload", workload, "--hold-ms", "\(holdMs)", "--log", log.path] }
        nodes[id] = try ChildProcess(try TestCluster.dlmtool().path, args, environment: ["DLM_SECRET": secret], outputDirectory: dir)
    }

    /// SIGKILL (reaped), SIGTERM (reaped, SIGKILL after 5 s), or any other signal as it is.
    func kill(_ id: UInt32, signal: Int32 = SIGKILL) {
        guard let p = nodes[id] else { return }
        switch signal {
        case SIGKILL: p.kill()
        case SIGTERM: p.stop()
        default: p.signal(signal)
        }
    }

    func stopAll() {
        for p in nodes.values { p.kill() }
        nodes = [:]
    }

    deinit {
        stopAll()
        try? FileManager.default.removeItem(at: dir)
    }

    // MARK: The event log

    struct Event { var kind: String; var node: UInt32; var time: UInt64; var epoch: UInt64?; var lvb: String? }

    func events() -> [Event] {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count >= 3, let n = UInt32(f[1]), let t = UInt64(f[2]) else { return nil }
            var e = Event(kind: String(f[0]), node: n, time: t)
            for kv in f.dropFirst(3) {
                if kv.hasPrefix("epoch=") { e.epoch = UInt64(kv.dropFirst(6)) }
                if kv.hasPrefix("lvb=") { e.lvb = String(kv.dropFirst(4)) }
            }
            return e
        }
    }

    /// Hold intervals per the log: from ACQ to REL/FENCED of the same node; a holder killed while
    /// holding ends at its death (`deaths`).
    func checkMutualExclusion(deaths: [UInt32: UInt64]) throws -> Int {
        var open: [UInt32: UInt64] = [:]
        var intervals: [(UInt32, UInt64, UInt64)] = []
        for e in events() {
            switch e.kind {
            case "ACQ":
                // The file is appended under the lock, so an ACQ while another holds is an overlap,
                // unless that other holder is dead (killed while holding) and died before this ACQ.
                for (n, start) in open where n != e.node {
                    guard let d = deaths[n], d <= e.time else {
                        throw ModelFailure("node \(e.node) acquired at \(e.time) while node \(n) held since \(start)")
                    }
                    intervals.append((n, start, d))
                    open[n] = nil
                }
                open[e.node] = e.time
            case "REL", "FENCED":
                if let s = open.removeValue(forKey: e.node) { intervals.append((e.node, s, e.time)) }
            default:
                break
            }
        }
        let sorted = intervals.sorted { $0.1 < $1.1 }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.1 < a.2 {
            throw ModelFailure("overlap: node \(a.0) [\(a.1), \(a.2)] and node \(b.0) [\(b.1), \(b.2)]")
        }
        return intervals.count
    }
}

/// Polls `cond` until true or the timeout passes.
func eventually(_ what: String, timeout: Double = 20, _ cond: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if (try? await cond()) == true { return }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
    throw ModelFailure("timed out after \(timeout) s waiting for \(what)")
}
