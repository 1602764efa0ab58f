import Foundation
import LockManager

/// Acquire+release latency with other locks held in the master's table, and what each held lock
/// costs the master: the cluster holds a lock per cached inode on every node.
struct HeldLocksBench {
    let masterPID: Int32
    /// The node that holds the other locks (its own process would do as well; the master is what is measured).
    let filler: LockClient

    struct Row { var held: Int; var stats: BenchCommand.Stats; var masterBytes: Int }

    /// A 32-byte resource name per held lock.
    static func name(_ i: Int) -> String {
        let digits = String(i)
        return "held-" + String(repeating: "0", count: 27 - digits.count) + digits
    }

    /// Takes locks `from..<to` with many requests in flight.
    func fill(from: Int, to: Int) async throws {
        let parallel = 128
        try await withThrowingTaskGroup(of: Void.self) { g in
            for lane in 0..<parallel {
                g.addTask {
                    var i = from + lane
                    while i < to {
                        _ = try await filler.lock(Self.name(i), mode: .pr, timeout: .seconds(30))
                        i += parallel
                    }
                }
            }
            try await g.waitForAll()
        }
    }

    /// For each level (ascending): fill the table up to it, measure, read the master's memory.
    func run(levels: [Int], measure: () async throws -> BenchCommand.Stats) async throws -> [Row] {
        var rows: [Row] = []
        var filled = 0
        for level in levels.sorted() {
            let start = monotonicNow()
            try await fill(from: filled, to: level)
            if level > filled {
                print(String(format: "filled %d held locks in %.1f s", level - filled, Double(monotonicNow() - start) / 1e9))
            }
            filled = level
            let stats = try await measure()
            let row = Row(held: level, stats: stats, masterBytes: try ResidentMemory.bytes(of: masterPID))
            print("held=\(level) p50_us=\(stats.p50) p99_us=\(stats.p99) ops_s=\(stats.opsPerSecond) master_rss_mib=\(row.masterBytes >> 20)")
            rows.append(row)
        }
        if let base = rows.first, let top = rows.last, top.held > base.held {
            let perLock = (top.masterBytes - base.masterBytes) / (top.held - base.held)
            print("bytes_per_held_lock=\(perLock) (master RSS, \(base.held) to \(top.held) held locks, 32-byte names)")
            print(String(format: "p50_ratio=%.2f (p50 with %d held / p50 with %d)", Double(top.stats.p50) / Double(max(1, base.stats.p50)), top.held, base.held))
        }
        return rows
    }
}
