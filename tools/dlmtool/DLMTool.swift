import ArgumentParser
import Foundation
import ClusterTransport
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
    @Option(help: "local: the shared coordination file (the LUN image).") var file: String?
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

    func make(node: UInt32) throws -> any CoordinationBackend {
        switch backend {
        case "local":
            guard let file else { throw ValidationError("--file is required with the local backend") }
            return try LocalCoordination(path: file, node: node)
        case "etcd":
            guard let etcd else { throw ValidationError("--etcd is required with the etcd backend") }
            return try EtcdCoordination(endpoint: etcd, volume: volume, node: node, ttl: ttl)
        default:
            throw ValidationError("unknown backend \(backend)")
        }
    }
}
