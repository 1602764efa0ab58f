import ArgumentParser
import Foundation
import LockManager
import NIOPosix

@main
struct DLMTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlmtool",
        abstract: "Run, inspect and benchmark the CSVFS distributed lock manager.",
        subcommands: [NodeCommand.self, ListCommand.self, BenchCommand.self])
}

/// How a node reaches the coordination backend.
struct BackendOptions: ParsableArguments {
    @Option(help: "Coordination backend: local or etcd.") var backend: String = "local"
    @Option(help: "local: the shared coordination file: a CSVFS LUN (then give --region) or a file of its own.") var file: String?
    @Option(help: "local: OFFSET+LENGTH of the file the backend may use; for a CSVFS LUN the coordination range `csvfs info` prints. Without it the file is the backend's alone.")
    var region: String?
    @Option(help: "etcd: the client endpoint, e.g. http://127.0.0.1:2379.") var etcd: String?
    @Option(help: "etcd: the volume name (key prefix).") var volume: String = "vol"
    @Option(help: "etcd: lease TTL in seconds.") var ttl: Int = 3
    @Option(help: "Cluster secret (or DLM_SECRET in the environment).") var secret: String?

    func clusterSecret() throws -> ClusterSecret {
        guard let s = secret ?? ProcessInfo.processInfo.environment["DLM_SECRET"], !s.isEmpty else {
            throw ValidationError("a cluster secret is required (--secret or DLM_SECRET)")
        }
        return ClusterSecret(s)
    }

    func localRegion() throws -> LocalCoordination.Region {
        guard let region else { return .ownFile }
        let parts = region.split(separator: "+", omittingEmptySubsequences: false)
        guard parts.count == 2, let offset = Int64(parts[0]), let length = Int64(parts[1]) else {
            throw ValidationError("--region must be OFFSET+LENGTH in bytes, e.g. 65536+65536 (got \(region))")
        }
        return LocalCoordination.Region(offset: offset, length: length)
    }

    func make(node: UInt32) throws -> any CoordinationBackend {
        switch backend {
        case "local":
            guard let file else { throw ValidationError("--file is required with the local backend") }
            return try LocalCoordination(path: file, region: try localRegion(), node: node)
        case "etcd":
            guard let etcd else { throw ValidationError("--etcd is required with the etcd backend") }
            return try EtcdCoordination(endpoint: etcd, volume: volume, node: node, ttl: ttl)
        default:
            throw ValidationError("unknown backend \(backend)")
        }
    }
}
