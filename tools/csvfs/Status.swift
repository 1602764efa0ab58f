import ArgumentParser
import CSVFS
import CSVFSCluster
import Foundation
import Primitives

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a volume's cluster: its coordinator and epoch, every node (alive or not, where it mounts), its open files, the VM disks among them (chain, owner) and file locks.",
        discussion: """
            Open files and file locks are asked through a mount of the volume on this host (the one given, \
            else any), so they are shown only where the volume is mounted.
            """)

    @Argument(help: "A mountpoint of the volume, or its LUN.")
    var target: String

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: "The etcd endpoint the volume's nodes join through, if they do.")
    var etcd: String?

    func run() throws {
        let path = URL(fileURLWithPath: target).standardizedFileURL.path
        let given = MountTable.csvfsMount(at: path)
        let lun = given?.source ?? target
        let mountpoint = given?.mountpoint ?? Self.mount(of: lun)?.mountpoint
        let status: ClusterStatus
        do {
            status = try blocking { [etcd] in try await ClusterStatus.gather(lun: lun, etcd: etcd, mountpoint: mountpoint) }
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
        Self.printTable(rows)
        if let settings = status.failureDetection { print("failure detection (this node): \(settings.description)") }
        print("")
        if let unknown = status.openFilesUnknown {
            print("open files:  unknown (\(unknown))")
            return
        }
        let files = status.nodes.flatMap { $0.openFiles ?? [] }
        if files.isEmpty {
            print("open files:  none")
        } else {
            Self.printTable([["NODE", "INODE", "OPENS", "PATH"]] + files.map { f in
                [String(f.node), String(f.ino), String(f.handles), f.path ?? "(unlinked)"]
            })
        }
        print("")
        if let disks = status.disks, !disks.isEmpty {
            Self.printTable([["DISK", "FORMAT", "CHAIN", "PARENT", "OWNER"]] + disks.map { d in
                let owners = d.owners.map { "node \($0.node) (\($0.mode == "exclusive" ? "writing" : "reading"))" }
                return [d.path, d.format, d.chainDepth.map(String.init) ?? "-", d.error.map { "error: \($0)" } ?? d.parent ?? "-",
                        owners.isEmpty ? "none" : owners.joined(separator: ", ")]
            })
            print("")
        }
        let locks = status.nodes.flatMap { $0.fileLocks ?? [] }
        if locks.isEmpty {
            print("file locks:  none")
            return
        }
        Self.printTable([["NODE", "PID", "KIND", "MODE", "BYTES", "PATH"]] + locks.map { l in
            [String(l.node), String(l.pid), l.kind, l.mode, "\(l.start)-\(l.end.map(String.init) ?? "EOF")", l.path ?? "(unlinked)"]
        })
    }

    static func printTable(_ rows: [[String]]) {
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let line = zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
            print(line.replacingOccurrences(of: " +$", with: "", options: .regularExpression))
        }
    }

    /// A CSVFS mount of the LUN file `lun` on this host: the same file, however its path was written.
    static func mount(of lun: String) -> MountTable.Entry? {
        var wanted = stat()
        guard stat(lun, &wanted) == 0 else { return nil }
        return MountTable.entries().first { entry in
            var source = stat()
            return entry.fileSystemType == "fuse.csvfs" && stat(entry.source, &source) == 0
                && source.st_dev == wanted.st_dev && source.st_ino == wanted.st_ino
        }
    }
}
