import ArgumentParser
import CSVFS
import CSVFSCluster
import Foundation
import Glibc
import Logging
import Primitives

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount a CSVFS volume through FUSE.",
        discussion: "Without --foreground, returns once the mount is ready; the volume is served in the background.")

    @Argument(help: "The LUN holding the volume.")
    var lun: String

    @Argument(help: "An existing directory to mount on.")
    var mountpoint: String

    @Flag(help: "Serve in this process until unmounted (logs go to standard error).")
    var foreground = false

    @Option(name: .short, help: "Mount options, comma-separated: FUSE's (e.g. ro); io=aio (default) or io=threads for how file data moves to and from the LUN; secret_file=PATH as --secret-file; metrics=HOST:PORT to serve Prometheus metrics there; lease_ttl=SECONDS, the etcd lease (default 3); io_timeout=SECONDS, how long applications wait through a failure before an error (default 60).")
    var options: String?

    @Option(help: "Append the background server's log to this file.")
    var log: String?

    @Option(help: "This node's id in the volume's cluster, 1-256 (default: the lowest free one).")
    var node: UInt32?

    @Option(help: "HOST:PORT this node serves locks and metadata on while it is the coordinator (default: 127.0.0.1 and a free port).")
    var address: String?

    @Option(help: "The volume's cluster secret (default: /etc/csvfs/VOLUME-UUID.secret, as csvfs format wrote it).")
    var secretFile: String?

    @Option(help: .hidden)
    var readyFD: Int32?

    @Option(help: "Join through etcd at this endpoint (http://HOST:PORT), for nodes on several hosts (default: every node on this host, coordinating through the LUN).")
    var etcd: String?

    @Option(help: "Seconds to wait for a coordinator to accept this node.")
    var joinTimeout: Int = 30

    func run() throws {
        do {
            try FUSESession.checkMountpoint(mountpoint)
        } catch {
            throw Failure("csvfs mount: \(error)")
        }
        _ = try Self.splitOptions(options)
        guard joinTimeout > 0 else { throw Failure("csvfs mount: --join-timeout \(joinTimeout): must be at least 1 s") }
        if let node, !(1...256).contains(node) { throw Failure("csvfs mount: --node \(node): a node id is 1-256") }
        if let address, NodeAddress.split(address) == nil { throw Failure("csvfs mount: --address \(address): expected HOST:PORT") }
        if foreground {
            try serve()
        } else {
            try Daemon.start(arguments: ["mount", lun, mountpoint, "--foreground"] + forwardedOptions, log: log)
        }
    }

    /// The options the background server is started with.
    private var forwardedOptions: [String] {
        var out: [String] = []
        if let options { out += ["-o", options] }
        out += ["--join-timeout", String(joinTimeout)]
        if let node { out += ["--node", String(node)] }
        if let address { out += ["--address", address] }
        if let secretFile { out += ["--secret-file", secretFile] }
        if let etcd { out += ["--etcd", etcd] }
        return out
    }

    /// Joins the volume's cluster as a node and serves it until unmounted.
    private func serve() throws {
        var logger = Logger(label: "csvfs")
        logger.logLevel = .info
        let report = ReadyPipe(fd: readyFD)
        let own = try Self.splitOptions(options)
        // First: the metrics system must be bootstrapped before anything makes a metric.
        let metrics: MetricsEndpoint?
        do {
            metrics = try own.metrics.map { endpoint in try blocking { try await MetricsEndpoint(host: endpoint.host, port: endpoint.port) } }
        } catch {
            let message = "csvfs mount: -o metrics=\(own.metrics.map { "\($0.host):\($0.port)" } ?? ""): \(error)"
            report.fail(message)
            throw Failure(message)
        }
        defer { if let metrics { blocking { await metrics.stop() } } }
        if let metrics { logger.info("metrics for Prometheus on http://\(metrics.address)/metrics") }
        var options = JoinOptions(node: node, address: address, secretFile: secretFile ?? own.secretFile, io: own.io)
        options.timeout = .seconds(joinTimeout)
        options.etcd = etcd
        options.leaseTTLSeconds = own.leaseTTL
        if let ioTimeout = own.ioTimeout { options.ioTimeoutSeconds = ioTimeout }
        options.mountpoint = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        let cluster: ClusterNode
        do {
            cluster = try blocking { [lun, logger, options] in try await ClusterNode.join(lun: lun, options: options, logger: logger) }
        } catch {
            let message = "csvfs mount: \(lun): \(error)"
            report.fail(message)
            throw Failure(message)
        }
        defer { blocking { await cluster.leave() } }
        if cluster.usedBackupSuperblock {
            logger.warning("primary superblock unreadable; mounted from the backup copy (run csvfs fsck --repair)")
        }
        logger.info("node \(cluster.id) at \(cluster.address) joined; \(cluster.isCoordinator ? "it is the coordinator" : "metadata goes to the coordinator")")
        do {
            try FUSESession.serve(metadata: cluster.coherent, data: cluster.data, cache: cluster.coherent, lunPath: lun,
                                  mountpoint: mountpoint, node: cluster.id,
                                  ownership: cluster.coherent.diskOwnership, protection: cluster.coherent.imageProtection,
                                  options: own.fuse, logger: logger) {
                report.ready()
            }
            logger.info("metadata RPCs: \(cluster.remote.counters)")
        } catch {
            let message = "csvfs mount: \(error)"
            report.fail(message)
            throw Failure(message)
        }
    }
}

extension Mount {
    /// The options of `-o` that are CSVFS's own, taken out of those for FUSE.
    struct OwnOptions {
        var io = LUNIOMode.aio
        /// `secret_file=PATH`, for fstab lines, where no `--secret-file` can be given.
        var secretFile: String?
        /// `metrics=HOST:PORT`: serve Prometheus metrics there.
        var metrics: (host: String, port: Int)?
        /// `lease_ttl=SECONDS` (etcd) and `io_timeout=SECONDS`: `FailureDetection`.
        var leaseTTL: Int?
        var ioTimeout: Int?
        var fuse: [String] = []
    }

    static func splitOptions(_ options: String?) throws -> OwnOptions {
        var own = OwnOptions()
        for option in options?.split(separator: ",").map(String.init) ?? [] {
            if option.hasPrefix("secret_file=") {
                own.secretFile = String(option.dropFirst("secret_file=".count))
            } else if option.hasPrefix("metrics=") {
                guard let address = NodeAddress.split(String(option.dropFirst("metrics=".count))) else {
                    throw Failure("csvfs mount: -o \(option): expected metrics=HOST:PORT")
                }
                own.metrics = address
            } else if option.hasPrefix("lease_ttl=") || option.hasPrefix("io_timeout=") {
                let (name, value) = (option.prefix { $0 != "=" }, option.drop { $0 != "=" }.dropFirst())
                guard let seconds = Int(value), seconds > 0 else {
                    throw Failure("csvfs mount: -o \(option): expected \(name)=SECONDS, a whole number above 0")
                }
                if name == "lease_ttl" { own.leaseTTL = seconds } else { own.ioTimeout = seconds }
            } else if option.hasPrefix("io=") {
                let value = String(option.dropFirst(3))
                guard let mode = LUNIOMode(rawValue: value) else {
                    throw Failure("csvfs mount: -o \(option): io is one of \(LUNIOMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                own.io = mode
            } else {
                own.fuse.append(option)
            }
        }
        return own
    }
}

/// The channel through which a background server tells `csvfs mount` that the mount is ready, or why not.
struct ReadyPipe: Sendable {
    let fd: Int32?

    func ready() { send("ready\n") }
    func fail(_ message: String) { send("error: \(message)\n") }

    private func send(_ text: String) {
        guard let fd else { return }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }
}

/// `mount.csvfs LUN DIR [-sfnv] [-o OPTIONS]` as mount(8) calls it, into `csvfs mount` arguments.
enum MountHelper {
    /// Options that mount(8) and fstab use but FUSE does not take.
    static let dropped: Set<String> = ["defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "rw"]

    static func translate(_ arguments: [String]) -> [String] {
        var positional: [String] = []
        var options: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "-o", index + 1 < arguments.count {
                options += arguments[index + 1].split(separator: ",").map(String.init)
                index += 2
                continue
            }
            if !argument.hasPrefix("-") { positional.append(argument) }
            index += 1
        }
        let kept = options.filter { !dropped.contains($0) && !$0.hasPrefix("x-") && !$0.hasPrefix("comment=") }
        return positional + (kept.isEmpty ? [] : ["-o", kept.joined(separator: ",")])
    }
}
