import Foundation

/// The resident memory of a process as the kernel counts it (`VmRSS`), for what the master costs
/// per lock or per connection (the bench and the hostile-peer tests measure a master process).
public enum ResidentMemory {
    public static func bytes(of pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              line.split(separator: " ").count >= 2, let kb = Int(line.split(separator: " ")[1]) else {
            throw CoordinationError("no VmRSS in /proc/\(pid)/status")
        }
        return kb * 1024
    }
}
