import ClusterTransport
import NIOCore
import NIOPosix
import Logging

/// What else a node does with the coordinator role, told by `DLMNode` in the order of the
/// `RoleMachine`'s directives (the filesystem opens and closes its metadata database here).
public protocol RoleHooks: Sendable {
    /// This node is about to host the role under `leadership`: the master starts once this returns.
    /// Throwing refuses the role for now (it is tried again while the leadership lasts).
    func willHost(_ leadership: Leadership) async throws
    /// This node no longer hosts `epoch`; its master has already stopped.
    func didStop(_ epoch: Epoch) async
    /// The role is hosted by `leader` (nil: by nobody known, or this node is fenced).
    func follow(_ leader: Leadership?) async
}

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
    private let services: ServiceFactory
    private let hooks: (any RoleHooks)?
    private let master = Locked<LockMaster?>(nil)
    private let watcher = Locked<Task<Void, Never>?>(nil)

    /// `volume` is the volume's id: with the secret it is what a node proves to join (a node of
    /// another volume is refused even with the right secret). `services` are served beside the lock
    /// master's on its port while this node hosts the role; `hooks` hear of the role's changes.
    public init(coordination: any CoordinationBackend, secret: ClusterSecret, volume: String = "", host: String = "127.0.0.1",
                port: Int = LockMaster.defaultPort, group: EventLoopGroup, limits: MasterLimits = MasterLimits(),
                services: @escaping ServiceFactory = { [:] }, hooks: (any RoleHooks)? = nil,
                logger: Logger = Logger(label: "dlm.node")) {
        self.limits = limits
        self.services = services
        self.hooks = hooks
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

    /// `coordinationStarted`: the caller has already started the backend at `address` (to find a free
    /// node id by trying), so only the client and the role follow.
    public func start(coordinationStarted: Bool = false) async throws {
        if !coordinationStarted { try await coordination.start(address: address) }
        client.start()
        let events = coordination.events()
        let task = Task { [self] in await hostRole(following: events) }
        watcher.withLock { $0 = task }
    }

    private enum RoleInput: Sendable {
        case event(CoordinationEvent)
        case tick
    }

    /// Hosts the master exactly while this node holds the leadership and is not fenced, by the
    /// coordination events through `RoleMachine`; directives are carried out one after the other,
    /// so the old master has stopped before a new one starts.
    private func hostRole(following events: AsyncStream<CoordinationEvent>) async {
        let (inputs, feed) = AsyncStream<RoleInput>.makeStream()
        let forward = Task {
            for await e in events { feed.yield(.event(e)) }
            feed.finish()
        }
        var machine = RoleMachine(node: coordination.node)
        var retry: Task<Void, Never>?
        defer {
            forward.cancel()
            retry?.cancel()
        }
        for await input in inputs {
            var directives: [RoleMachine.Directive]
            switch input {
            case .event(let e):
                logger.debug("node \(coordination.node): \(e)")
                directives = machine.handle(e, now: monotonicNow())
            case .tick:
                directives = machine.tick(now: monotonicNow())
            }
            while !directives.isEmpty {
                switch directives.removeFirst() {
                case .host(let leadership):
                    if !(await host(leadership)) { directives += machine.hostFailed(leadership.epoch, now: monotonicNow()) }
                case .stop(let epoch):
                    logger.warning("node \(coordination.node) no longer leads epoch \(epoch); stopping its lock master")
                    await master.withLock { m in defer { m = nil }; return m }?.stop()
                    await hooks?.didStop(epoch)
                case .follow(let leader):
                    // The lock client finds the master through the backend itself.
                    await hooks?.follow(leader)
                }
            }
            retry?.cancel()
            if let at = machine.nextDeadline {
                retry = Task {
                    let now = monotonicNow()
                    if at > now { try? await Task.sleep(nanoseconds: at - now) }
                    if !Task.isCancelled { feed.yield(.tick) }
                }
            }
        }
        // The backend stopped (or the node is stopping): nothing is hosted any more.
        await master.withLock { m in defer { m = nil }; return m }?.stop()
        if let hosted = machine.hosted { await hooks?.didStop(hosted) }
    }

    /// The hooks first, so nothing reaches the role's services before they are ready; undone if the
    /// master cannot start.
    private func host(_ leadership: Leadership) async -> Bool {
        do {
            try await hooks?.willHost(leadership)
        } catch {
            logger.error("node \(coordination.node) cannot take the role for epoch \(leadership.epoch): \(error)")
            return false
        }
        if await startMaster(leadership) { return true }
        await hooks?.didStop(leadership.epoch)
        return false
    }

    private func startMaster(_ leadership: Leadership) async -> Bool {
        do {
            let m = try await LockMaster(host: host, port: port, epoch: leadership.epoch, secret: secret, volume: volume,
                                         coordination: coordination, group: group, limits: limits, services: services,
                                         logger: logger)
            master.withLock { $0 = m }
            logger.info("node \(coordination.node) is lock master, epoch \(leadership.epoch)")
            return true
        } catch {
            logger.error("cannot start the lock master on \(address): \(error)")
            return false
        }
    }

    public var isMaster: Bool { master.withLock { $0 != nil } }

    /// The master this node hosts, if it is the master now.
    public var hostedMaster: LockMaster? { master.withLock { $0 } }

    public func stop() async {
        // Wait for the role task: a master it was starting is stopped before this returns.
        let role = watcher.withLock { $0 }
        role?.cancel()
        await role?.value
        await client.stop()
        await master.withLock { $0 }?.stop()
        await coordination.stop()
    }
}
