import ArgumentParser
import CSVFS
import CSVFSCluster
import Foundation

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a volume's cluster: its coordinator and epoch, and every node (alive or not, where it mounts).")

    @Argument(help: "A mountpoint of the volume, or its LUN.")
    var target: String

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: "The etcd endpoint the volume's nodes join through, if they do.")
    var etcd: String?

    func run() throws {
        let path = URL(fileURLWithPath: target).standardizedFileURL.path
        let lun = MountTable.csvfsMount(at: path)?.source ?? target
        let status: ClusterStatus
        do {
            status = try blocking { [etcd] in try await ClusterStatus.gather(lun: lun, etcd: etcd) }
        } catch {
            throw Failure("csvfs status: \(lun): \(error)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            print(String(decoding: try encoder.encode(status), as: UTF8.self))
            return
        }
        print("volume:      \(status.volume)\(status.label.isEmpty ? "" : " (\(status.label))")")
        print("lun:         \(status.lun)")
        if let c = status.coordinator {
            print("coordinator: node \(c.node) at \(c.address), epoch \(c.epoch)")
        } else {
            print("coordinator: none (no node has the volume mounted)")
        }
        let rows = [["NODE", "ALIVE", "HOST", "ADDRESS", "PID", "JOINED", "MOUNTPOINT"]] + status.nodes.map { n in
            [String(n.id) + (n.id == status.coordinator?.node ? "*" : ""), n.alive ? "yes" : "no", n.host ?? "-", n.address ?? "-",
             n.pid.map(String.init) ?? "-", n.joinedAt.map { ISO8601DateFormatter().string(from: $0) } ?? "-", n.mountpoint ?? "-"]
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let line = zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
            print(line.replacingOccurrences(of: " +$", with: "", options: .regularExpression))
        }
    }
}
