import ClusterTransport
import NIOCore
import NIOPosix
import Logging

/// One member of the cluster: it campaigns through the coordination backend, hosts the lock
/// master while it is the elected leader, and always runs a lock client (also towards itself).
public final class DLMNode: Sendable {
    public let client: LockClient
    public let coordination: any CoordinationBackend
    private let host: String
    private let port: Int
    private let secret: ClusterSecret
    private let volume: String
    private let group: EventLoopGroup
    private let logger: Logger
    private let limits: MasterLimits
    private let master = Locked<LockMaster?>(nil)
    private let watcher = Locked<Task<Void, Never>?>(nil)

    /// `volume` is the volume's id: with the secret it is what a node proves to join (a node of
    /// another volume is refused even with the right secret).
    public init(coordination: any CoordinationBackend, secret: ClusterSecret, volume: String = "", host: String = "127.0.0.1",
                port: Int = LockMaster.defaultPort, group: EventLoopGroup, limits: MasterLimits = MasterLimits(),
                logger: Logger = Logger(label: "dlm.node")) {
        self.limits = limits
        self.coordination = coordination
        self.secret = secret
        self.volume = volume
        self.host = host
        self.port = port
        self.group = group
        self.logger = logger
        client = LockClient(coordination: coordination, secret: secret, volume: volume, group: group, logger: logger)
    }

    public var address: String { "\(host):\(port)" }

    public func start() async throws {
        try await coordination.start(address: address)
        client.start()
        let task = Task { [self] in
            while !Task.isCancelled {
                await reconcileRole()
                try? await Task.sleep(nanoseconds: 5_000_000)
            }
        }
        watcher.withLock { $0 = task }
    }

    /// Host the master exactly while we hold the leadership and are not fenced.
    private func reconcileRole() async {
        let mine = coordination.isFenced() ? nil : coordination.ownLeadership()
        let current = master.withLock { $0 }
        if let mine, current?.epoch != mine.epoch {
            await current?.stop()
            do {
                let m = try await LockMaster(host: host, port: port, epoch: mine.epoch, secret: secret, volume: volume,
                                             coordination: coordination, group: group, limits: limits, logger: logger)
                master.withLock { $0 = m }
                logger.info("node \(coordination.node) is lock master, epoch \(mine.epoch)")
            } catch {
                logger.error("cannot start the lock master on \(address): \(error)")
            }
        } else if mine == nil, let current {
            logger.warning("node \(coordination.node) lost the leadership; stopping its lock master")
            master.withLock { $0 = nil }
            await current.stop()
        }
    }

    public var isMaster: Bool { master.withLock { $0 != nil } }

    /// The master this node hosts, if it is the master now.
    public var hostedMaster: LockMaster? { master.withLock { $0 } }

    public func stop() async {
        watcher.withLock { $0 }?.cancel()
        await client.stop()
        await master.withLock { $0 }?.stop()
        await coordination.stop()
    }
}
