import ClusterTransport
import CSVFS
import Dispatch
import Foundation
import Glibc
import Logging
import LockManager
import NIOCore
import NIOPosix
import Primitives

/// How a node joins its volume's cluster.
public struct JoinOptions: Sendable {
    /// The node's id; the lowest free one when nil.
    public var node: UInt32?
    /// `HOST:PORT` the node serves on while coordinator; 127.0.0.1 and a free port when nil.
    public var address: String?
    /// The cluster secret's file; `ClusterSecretFile.defaultPath` when nil.
    public var secretFile: String?
    /// An etcd endpoint (`http://HOST:PORT`) for nodes on several hosts; nil: the `local` backend, every node
    /// on this host, coordinating through the LUN's coordination range.
    public var etcd: String?
    public var io: LUNIOMode = .aio
    /// How long joining may take: an election, and the coordinator's answer.
    public var timeout: Duration = .seconds(30)
    /// Where this node mounts the volume, for `csvfs status`.
    public var mountpoint = ""
    /// The etcd lease's TTL (seconds; the `local` backend has none) and the I/O timeout.
    public var leaseTTLSeconds: Int?
    public var ioTimeoutSeconds = FailureDetection.defaultIOTimeoutSeconds

    /// The settings this node runs with, refused with a message when out of range or meaningless.
    public func failureDetection() throws -> FailureDetection {
        guard FailureDetection.ioTimeoutRange.contains(ioTimeoutSeconds) else {
            throw JoinError("io_timeout=\(ioTimeoutSeconds): expected seconds in \(FailureDetection.ioTimeoutRange)")
        }
        guard etcd != nil else {
            if let leaseTTLSeconds {
                throw JoinError("lease_ttl=\(leaseTTLSeconds) applies to the etcd backend (--etcd); with the local backend a node's "
                                + "lease is its lock on the LUN, which the kernel drops when the process dies")
            }
            return FailureDetection(leaseTTLSeconds: nil, ioTimeoutSeconds: ioTimeoutSeconds)
        }
        let ttl = leaseTTLSeconds ?? FailureDetection.defaultLeaseTTLSeconds
        guard FailureDetection.leaseTTLRange.contains(ttl) else {
            throw JoinError("lease_ttl=\(ttl): expected seconds in \(FailureDetection.leaseTTLRange) (etcd refuses shorter leases)")
        }
        return FailureDetection(leaseTTLSeconds: ttl, ioTimeoutSeconds: ioTimeoutSeconds)
    }

    public init(node: UInt32? = nil, address: String? = nil, secretFile: String? = nil, io: LUNIOMode = .aio) {
        self.node = node
        self.address = address
        self.secretFile = secretFile
        self.io = io
    }
}

public struct JoinError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// This host's node of a volume's cluster: a member through the coordination backend (the `local` one, on
/// the LUN's coordination range), a DLM node that hosts the lock master and the metadata server while it is
/// the coordinator, and the metadata service and data path its FUSE mount serves.
public final class ClusterNode: Sendable {
    public let device: LUNDevice
    public let superblock: Superblock
    public let id: UInt32
    public let address: String
    public let metadata: RoutedMetadataService
    /// What the mount and the data path call: `metadata` under the DLM's inode locks, and the kernel's cache policy.
    public let coherent: CoherentMetadataService
    public let remote: RemoteMetadataService
    public let data: DataPath
    /// Set when the primary superblock was unreadable and the backup was used.
    public let usedBackupSuperblock: Bool
    private let dlm: DLMNode
    private let membershipWatch: Task<Void, Never>

    private init(device: LUNDevice, superblock: Superblock, id: UInt32, address: String, metadata: RoutedMetadataService,
                 coherent: CoherentMetadataService, remote: RemoteMetadataService, data: DataPath, usedBackupSuperblock: Bool,
                 dlm: DLMNode, membershipWatch: Task<Void, Never>) {
        self.usedBackupSuperblock = usedBackupSuperblock
        self.device = device
        self.superblock = superblock
        self.id = id
        self.address = address
        self.metadata = metadata
        self.coherent = coherent
        self.remote = remote
        self.data = data
        self.dlm = dlm
        self.membershipWatch = membershipWatch
    }

    /// The volume's id on the transport: a node of another volume is refused even with the right secret.
    static func volumeID(_ superblock: Superblock) -> String { superblock.uuid.uuidString.lowercased() }

    /// Joins the cluster of the volume on `lun`; returns once this node can serve metadata calls (it is the
    /// coordinator, or the coordinator has accepted it).
    public static func join(lun: String, options: JoinOptions, logger: Logger) async throws -> ClusterNode {
        let settings = try options.failureDetection()
        let device = try LUNDevice.open(lun)
        device.fence.reportClosing { logger.critical("\($0)") }
        var member: (any CoordinationBackend)?
        var joined: (DLMNode, DataPath)?
        do {
            try device.claimShared()
            let (superblock, copy) = try device.superblock()
            let secretPath = options.secretFile ?? ClusterSecretFile.defaultPath(volume: superblock.uuid)
            let secret = try ClusterSecretFile.read(from: secretPath)
            let (host, port) = try address(options.address, etcd: options.etcd)
            let region = LocalCoordination.Region(offset: superblock.coordinationOffset, length: superblock.coordinationLength)
            let volume = volumeID(superblock)
            let group = MultiThreadedEventLoopGroup.singleton

            let (id, coordination) = try await Self.member(lun: lun, region: region, etcd: options.etcd, volume: volume,
                                                           node: options.node, address: "\(host):\(port)",
                                                           leaseTTL: settings.leaseTTLSeconds, fence: device.fence)
            member = coordination
            // The role hooks and the metadata server need the routed service, which needs the DLM node's
            // lock client (its connection carries the metadata calls): the node is made first, the hooks after.
            let role = DeferredRoleHooks()
            let session = Locked<RoutedMetadataService?>(nil)
            let queue = DispatchQueue(label: "csvfs.metadata-rpc", attributes: .concurrent)
            let dlm = DLMNode(coordination: coordination, secret: secret, volume: volume, host: host, port: port, group: group,
                              services: { session.withLock { $0 }.map { [.metadata: MetadataSession(service: $0, queue: queue)] } ?? [:] },
                              hooks: role, logger: logger)
            let remote = RemoteMetadataService(channel: NetworkMetadataChannel(client: dlm.client, logger: logger), node: id,
                                               patience: CallPatience(timeout: settings.ioTimeout, fence: device.fence))
            let routed = RoutedMetadataService(remote: remote)
            session.withLock { $0 = routed }
            role.set(MetadataRole(device: device, superblock: superblock, node: id, service: routed, logger: logger))
            let coherent = CoherentMetadataService(routed: routed, node: id, client: dlm.client,
                                                  patience: routed.patience, failureDetection: settings, logger: logger)
            let data = try DataPath(service: coherent, device: device, io: options.io)
            joined = (dlm, data)
            try await dlm.start(coordinationStarted: true)
            try await admitted(routed, dlm.client, timeout: options.timeout, secretPath: secretPath)
            let watch = try await followMembership(coordination, coherent, routed)
            try NodeRecord(node: id, joinedAt: Date(), pid: getpid(), address: "\(host):\(port)", host: hostName(),
                           mountpoint: options.mountpoint).write(to: device, superblock: superblock)
            return ClusterNode(device: device, superblock: superblock, id: id, address: "\(host):\(port)", metadata: routed,
                               coherent: coherent, remote: remote, data: data, usedBackupSuperblock: copy == .backup,
                               dlm: dlm, membershipWatch: watch)
        } catch {
            if let (dlm, data) = joined {
                await dlm.stop()   // stops the coordination too
                data.close()
            } else {
                await member?.stop()
            }
            device.close()
            throw error
        }
    }

    /// Leaves the cluster: the role (and the database) is given up, the LUN released.
    public func leave() async {
        membershipWatch.cancel()
        NodeRecord.clear(node: id, on: device, superblock: superblock)
        await dlm.stop()
        data.close()
        try? device.fd.dataSync()
        device.close()
    }

    /// The kernel caches names and attributes for a fixed second while this node is the only member, and
    /// only under the DLM's licences while there are others (see `CoherentMetadataService`). A node that joins
    /// others waits out what their kernels cached while they were alone before it serves.
    /// The members also tell the coordinator whose file locks go (a node that left).
    private static func followMembership(_ coordination: any CoordinationBackend, _ coherent: CoherentMetadataService,
                                         _ routed: RoutedMetadataService) async throws -> Task<Void, Never> {
        let events = coordination.events()
        let watch = Task {
            for await event in events {
                if case .membersChanged(let members) = event {
                    coherent.setAlone(members.count <= 1)
                    routed.membersChanged(members)
                }
            }
        }
        let members = try await coordination.members()
        routed.membersChanged(members)
        coherent.setAlone(members.count <= 1, wait: true)
        if members.count > 1 {
            // Others see this member within milliseconds (etcd: its watch); what they cached before expires
            // within a second of that.
            try await Task.sleep(for: .milliseconds(Int(FixedKernelCachePolicy.alone * 1000) + 250))
        }
        return watch
    }

    static func hostName() -> String {
        var name = [UInt8](repeating: 0, count: 256)
        guard gethostname(&name, name.count) == 0 else { return "" }
        return String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Whether this node is the coordinator now.
    public var isCoordinator: Bool { metadata.isLocal }

    /// The given address, else a free port on the address the other nodes reach this host at: loopback
    /// with the `local` backend, the one that routes to etcd with etcd.
    private static func address(_ given: String?, etcd: String?) throws -> (String, Int) {
        if let given {
            guard let parsed = NodeAddress.split(given) else { throw JoinError("--address \(given): expected HOST:PORT") }
            return parsed
        }
        var host = "127.0.0.1"
        if let etcd {
            guard let url = URL(string: etcd), let etcdHost = url.host,
                  let local = NodeAddress.localAddress(towards: etcdHost, port: url.port ?? 2379) else {
                throw JoinError("cannot tell which address of this host reaches etcd at \(etcd): give --address HOST:PORT")
            }
            host = local
        }
        guard let port = NodeAddress.freePort(on: host) else { throw JoinError("no free port for the cluster transport on \(host)") }
        return (host, port)
    }

    /// A started member under `node`, or the lowest free id: of the `local` backend on the LUN's
    /// coordination range, or of etcd under the volume's prefix.
    private static func member(lun: String, region: LocalCoordination.Region, etcd: String?, volume: String, node: UInt32?,
                               address: String, leaseTTL: Int?, fence: WriteFence) async throws -> (UInt32, any CoordinationBackend) {
        func backend(_ id: UInt32) throws -> any CoordinationBackend {
            if let etcd {
                // The local backend leaves the fence open: its lease is this live process's lock on the LUN.
                return try EtcdCoordination(endpoint: etcd, volume: volume, node: id,
                                            ttl: leaseTTL ?? FailureDetection.defaultLeaseTTLSeconds, fence: fence)
            }
            return try LocalCoordination(path: lun, region: region, node: id)
        }
        func firstFree() async throws -> UInt32? {
            guard etcd != nil else { return try LocalCoordination.firstFreeNode(path: lun, region: region) }
            let taken = try await backend(LocalCoordination.maxNodes).members()
            return (1...LocalCoordination.maxNodes).first { !taken.contains($0) }
        }
        if let node {
            let coordination = try backend(node)
            try await coordination.start(address: address)
            return (node, coordination)
        }
        // Another node joining at the same moment may take the id first: then the next one.
        var lastError: (any Error)?
        for _ in 0..<8 {
            guard let free = try await firstFree() else {
                throw JoinError("all \(LocalCoordination.maxNodes) node ids of this volume are taken")
            }
            let coordination = try backend(free)
            do {
                try await coordination.start(address: address)
                return (free, coordination)
            } catch {
                lastError = error
            }
        }
        throw lastError ?? JoinError("cannot take a node id")
    }

    /// Waits until this node is the coordinator or the coordinator has accepted it. A coordinator that
    /// refuses it (the secret, the volume) ends the join at once; one that does not answer (it died while we
    /// joined) is waited out: the election names the next, or the timeout ends it.
    private static func admitted(_ routed: RoutedMetadataService, _ client: LockClient, timeout: Duration,
                                 secretPath: String) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if routed.isLocal { return }
            if routed.hasRoute, client.connection?.channel.isActive == true { return }
            switch client.refusal {
            case .authenticationFailed?:
                throw JoinError("the coordinator refused this node: the cluster secret in \(secretPath) is not this volume's")
            case .wrongVolume(let why)?:
                throw JoinError("the coordinator serves another volume: \(why)")
            default:
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw JoinError(routed.hasRoute ? "the coordinator did not accept this node within \(timeout)"
                                        : "no coordinator was elected within \(timeout)")
    }
}

/// Role hooks set once the objects they drive exist (see `ClusterNode.join`); until then there is no role
/// to take, since the node has not started.
final class DeferredRoleHooks: RoleHooks {
    private let hooks = Locked<(any RoleHooks)?>(nil)

    func set(_ target: any RoleHooks) { hooks.withLock { $0 = target } }

    func willHost(_ leadership: Leadership) async throws {
        guard let target = hooks.withLock({ $0 }) else { throw JoinError("the node is not ready to take the role") }
        try await target.willHost(leadership)
    }

    func didStop(_ epoch: Epoch) async { await hooks.withLock { $0 }?.didStop(epoch) }
    func follow(_ leader: Leadership?) async { await hooks.withLock { $0 }?.follow(leader) }
}
