import CSVFS
import Foundation
import Primitives

/// The one `MetadataService` of a cluster node, what its FUSE adapter and data path call: while the node is
/// the coordinator, straight to its own `LocalMetadataService` (so the coordinator's mount costs what a
/// single node's does); otherwise to the coordinator, through `RemoteMetadataService`. A call made while
/// the role is changing hands waits for the next route, within its `patience`, then fails with ETIMEDOUT (EIO
/// on a node that fenced itself).
public final class RoutedMetadataService: MetadataService, @unchecked Sendable {
    // @unchecked: `state` is reached only with `condition` locked.
    enum Route {
        /// Nobody known serves the metadata yet (the election, or this node opening the database).
        case pending
        case local(LocalMetadataService, MetadataServer)
        case remote
    }

    private struct State {
        var route: Route = .pending
        /// Calls running on the local service: it is closed only once they are done.
        var localCalls = 0
        /// The epoch of the coordinator this node follows, when it follows one.
        var followed: UInt64?
        /// The cluster's members, as the coordination backend last told them.
        var members: Set<UInt32> = []
    }

    private let condition = NSCondition()
    private var state = State()
    private let remote: RemoteMetadataService
    public let patience: CallPatience
    /// This node's file locks, for the next coordinator.
    private let heldLocks: HeldFileLocks
    /// This node's open files (handle to inode), for the next coordinator.
    private let openHandles = Locked<[UInt64: UInt64]>([:])
    /// Called once this node follows or hosts a new coordinator (after its reclaim is on its way).
    private let coordinatorChangeHandler = Locked<(@Sendable () -> Void)?>(nil)
    /// How long a new coordinator waits for the other nodes' reclaims at most.
    static let reclaimLimit: Duration = .seconds(10)

    public init(remote: RemoteMetadataService) {
        self.remote = remote
        patience = remote.patience
        heldLocks = HeldFileLocks(node: remote.node)
    }

    /// The node now owns the metadata: calls go to `service`, and the coordinator's RPC server serves it. The
    /// locks the others hold are awaited, this node's own are set before any call arrives.
    func host(_ service: LocalMetadataService) {
        heldLocks.coordinatorChanged()
        condition.lock()
        let members = state.members
        state.followed = nil
        condition.unlock()
        service.membersChanged(members.union([remote.node]))
        service.awaitLockReclaims(from: members.subtracting([remote.node]), limit: Self.reclaimLimit)
        // In this process a reclaim is a table update: only reading the database can fail, and then this node's
        // open files are not kept across this change (their data stays until the next coordinator's mount).
        try? service.reclaimOpenFiles(heldOpenFiles, by: nil)
        try? service.reclaimLocks(heldLocks.all, by: nil)
        set(.local(service, MetadataServer(service: service, applied: service)))
        coordinatorChangeHandler.withLock { $0 }?()
    }

    /// `handler` runs each time this node follows or hosts a new coordinator.
    func onCoordinatorChange(_ handler: @escaping @Sendable () -> Void) {
        coordinatorChangeHandler.withLock { $0 = handler }
    }

    /// The files this node has open, as the coordinators that opened them numbered them.
    private var heldOpenFiles: [OpenHandle] {
        openHandles.withLock { $0.map { OpenHandle(ino: $0.value, handle: $0.key) } }
    }

    /// The locks this node's processes hold on `ino` that the coordinator keeps.
    func heldFileLocks(on ino: UInt64) -> [FileLock] { heldLocks.locks(on: ino) }

    /// The cluster's members changed: a coordinator drops the file locks of a node that left.
    func membersChanged(_ members: Set<UInt32>) {
        condition.lock()
        state.members = members
        let local: LocalMetadataService? = if case .local(let service, _) = state.route { service } else { nil }
        condition.unlock()
        local?.membersChanged(members)
    }

    /// The node no longer owns the metadata: new calls wait for the next route; returns the service it had,
    /// once no call runs on it any more, for the caller to close.
    func unhost() -> LocalMetadataService? {
        condition.lock()
        defer { condition.unlock() }
        guard case .local(let service, _) = state.route else { return nil }
        state.route = .pending
        // Callers asleep in a lock wait would hold the hand-over up for their whole patience: they ask again,
        // of the next coordinator.
        service.stopLockWaits()
        while state.localCalls > 0 { condition.wait() }
        return service
    }

    /// Another node is the coordinator under `epoch`, or nobody known is (nil). A new one hears this node's
    /// file locks.
    func follow(_ epoch: UInt64?) {
        condition.lock()
        if case .local = state.route {
            condition.unlock()
            return
        }
        state.route = epoch != nil ? .remote : .pending
        condition.broadcast()
        guard epoch != state.followed else {
            condition.unlock()
            return
        }
        state.followed = epoch
        let generation = heldLocks.coordinatorChanged()
        if epoch != nil {
            heldLocks.reclaim(from: remote, generation: generation) { [self] () throws(Errno) in
                try remote.reclaimOpenFiles(heldOpenFiles, by: nil)
            }
        }
        condition.unlock()
        if epoch != nil { coordinatorChangeHandler.withLock { $0 }?() }
    }

    private func set(_ route: Route) {
        condition.lock()
        state.route = route
        condition.broadcast()
        condition.unlock()
    }

    /// Whether some node is known to serve the metadata now.
    var hasRoute: Bool {
        condition.lock()
        defer { condition.unlock() }
        if case .pending = state.route { return false }
        return true
    }

    /// Whether a call would go to this node's own database now.
    public var isLocal: Bool {
        condition.lock()
        defer { condition.unlock() }
        if case .local = state.route { return true }
        return false
    }

    /// Waits until a route is known and runs `body` on its service.
    private func routed<R>(_ body: (any MetadataService) throws(Errno) -> R) throws(Errno) -> R {
        condition.lock()
        // The clock is read only when there is a wait: this runs for every call, data-path maps included.
        var deadline: Date?
        while case .pending = state.route {
            if deadline == nil {
                guard !patience.isExhausted else {
                    condition.unlock()
                    throw .io
                }
                deadline = Date().addingTimeInterval(Double(patience.remaining / .milliseconds(1)) / 1000)
            }
            guard condition.wait(until: deadline!) else {
                condition.unlock()
                throw patience.expired
            }
        }
        guard case .local(let service, _) = state.route else {
            condition.unlock()
            return try body(remote)
        }
        state.localCalls += 1
        condition.unlock()
        defer { endLocalCall() }
        return try body(service)
    }

    /// Serves a request from another node with this node's own database, if it still is the coordinator.
    func serveHosted(_ request: [UInt8], from peer: UInt32) -> [UInt8]? {
        condition.lock()
        guard case .local(_, let server) = state.route else {
            condition.unlock()
            return nil
        }
        state.localCalls += 1
        condition.unlock()
        defer { endLocalCall() }
        return server.serve(request, from: peer)
    }

    private func endLocalCall() {
        condition.lock()
        state.localCalls -= 1
        if state.localCalls == 0 { condition.broadcast() }
        condition.unlock()
    }

    public func lookup(parent: UInt64, name: [UInt8]) throws(Errno) -> InodeAttributes {
        try routed { (s) throws(Errno) in try s.lookup(parent: parent, name: name) }
    }

    public func attributes(_ ino: UInt64) throws(Errno) -> InodeAttributes {
        try routed { (s) throws(Errno) in try s.attributes(ino) }
    }

    public func setAttributes(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes {
        try routed { (s) throws(Errno) in try s.setAttributes(ino, changes) }
    }

    public func createNode(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, symlinkTarget: [UInt8]?,
                           caller: Caller) throws(Errno) -> InodeAttributes {
        try routed { (s) throws(Errno) in
            try s.createNode(parent: parent, name: name, mode: mode, rdev: rdev, symlinkTarget: symlinkTarget, caller: caller)
        }
    }

    public func readlink(_ ino: UInt64) throws(Errno) -> [UInt8] {
        try routed { (s) throws(Errno) in try s.readlink(ino) }
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(Errno) -> InodeAttributes {
        try routed { (s) throws(Errno) in try s.link(ino, newParent: newParent, newName: newName) }
    }

    public func unlink(parent: UInt64, name: [UInt8]) throws(Errno) {
        try routed { (s) throws(Errno) in try s.unlink(parent: parent, name: name) }
    }

    public func rmdir(parent: UInt64, name: [UInt8]) throws(Errno) {
        try routed { (s) throws(Errno) in try s.rmdir(parent: parent, name: name) }
    }

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], mode: RenameMode) throws(Errno) {
        try routed { (s) throws(Errno) in try s.rename(parent: parent, name: name, newParent: newParent, newName: newName, mode: mode) }
    }

    public func readdir(_ ino: UInt64, after cookie: Int64, limit: Int, plus: Bool) throws(Errno) -> [DirectoryEntry] {
        try routed { (s) throws(Errno) in try s.readdir(ino, after: cookie, limit: limit, plus: plus) }
    }

    public func setXattr(_ ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool) throws(Errno) {
        try routed { (s) throws(Errno) in try s.setXattr(ino, name: name, value: value, create: create, replace: replace) }
    }

    public func getXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) -> [UInt8] {
        try routed { (s) throws(Errno) in try s.getXattr(ino, name: name) }
    }

    public func listXattrs(_ ino: UInt64) throws(Errno) -> [[UInt8]] {
        try routed { (s) throws(Errno) in try s.listXattrs(ino) }
    }

    public func removeXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) {
        try routed { (s) throws(Errno) in try s.removeXattr(ino, name: name) }
    }

    public func statistics() throws(Errno) -> VolumeStatistics {
        try routed { (s) throws(Errno) in try s.statistics() }
    }

    public func openFiles() throws(Errno) -> [OpenFile] {
        try routed { (s) throws(Errno) in try s.openFiles() }
    }

    public func opened(_ ino: UInt64, by node: UInt32?) throws(Errno) -> UInt64 {
        let handle = try routed { (s) throws(Errno) in try s.opened(ino, by: node) }
        openHandles.withLock { $0[handle] = ino }
        return handle
    }

    public func reclaimOpenFiles(_ files: [OpenHandle], by node: UInt32?) throws(Errno) {
        try routed { (s) throws(Errno) in try s.reclaimOpenFiles(files, by: node) }
    }

    public func released(_ ino: UInt64, handle: UInt64, by node: UInt32?) throws(Errno) {
        defer {
            heldLocks.released(handle: handle)
            openHandles.withLock { _ = $0.removeValue(forKey: handle) }
        }
        try routed { (s) throws(Errno) in try s.released(ino, handle: handle, by: node) }
    }

    public func lockConflict(_ request: FileLock) throws(Errno) -> FileLock? {
        try routed { (s) throws(Errno) in try s.lockConflict(request) }
    }

    public func setLock(_ request: FileLock, wait: UInt64?) throws(Errno) -> Bool {
        let granted = try routed { (s) throws(Errno) in try s.setLock(request, wait: wait) }
        if granted { heldLocks.granted(request) }
        return granted
    }

    public func cancelLockWait(_ wait: UInt64) throws(Errno) {
        try routed { (s) throws(Errno) in try s.cancelLockWait(wait) }
    }

    public func unlock(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) throws(Errno) {
        defer { heldLocks.unlocked(ino, kind: kind, range: range, owner: owner) }
        try routed { (s) throws(Errno) in try s.unlock(ino, kind: kind, range: range, owner: owner) }
    }

    public func releaseRecordLocks(_ ino: UInt64, owner: FileLockOwner) throws(Errno) {
        defer { heldLocks.closed(ino, owner: owner) }
        try routed { (s) throws(Errno) in try s.releaseRecordLocks(ino, owner: owner) }
    }

    public func reclaimLocks(_ locks: [FileLock], by node: UInt32?) throws(Errno) {
        try routed { (s) throws(Errno) in try s.reclaimLocks(locks, by: node) }
    }

    public func withdrawLocks(_ ino: UInt64, by node: UInt32?) throws(Errno) -> [FileLock] {
        let locks = try routed { (s) throws(Errno) in try s.withdrawLocks(ino, by: node) }
        heldLocks.withdrawn(ino)
        return locks
    }

    public func depositLocks(_ ino: UInt64, _ locks: [FileLock], by node: UInt32?) throws(Errno) {
        // Noted first: if the coordinator changes before it has heard them, the next one hears them in the
        // reclaim, and again in the deposit retried with it (which replaces them, so twice is once).
        heldLocks.deposited(ino, locks)
        try routed { (s) throws(Errno) in try s.depositLocks(ino, locks, by: node) }
    }

    public func lockDelegations() throws(Errno) -> [DelegatedInode] {
        try routed { (s) throws(Errno) in try s.lockDelegations() }
    }

    /// Whether the coordinator hosted here holds lock calls back until the nodes' reclaims are in.
    var recoveringLocks: Bool {
        condition.lock()
        defer { condition.unlock() }
        if case .local(let service, _) = state.route { return service.recoveringLocks }
        return false
    }

    public func fileLocks() throws(Errno) -> [FileLock] {
        try routed { (s) throws(Errno) in try s.fileLocks() }
    }

    public func mapping(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> (size: UInt64, segments: [FileSegment]) {
        try routed { (s) throws(Errno) in try s.mapping(ino, range) }
    }

    public func prepareWrite(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> [FileSegment] {
        try routed { (s) throws(Errno) in try s.prepareWrite(ino, range) }
    }

    public func completeWrite(_ ino: UInt64, filled: [Range<Int64>], end: Int64) throws(Errno) {
        try routed { (s) throws(Errno) in try s.completeWrite(ino, filled: filled, end: end) }
    }

    public func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno) {
        try routed { (s) throws(Errno) in try s.fallocate(ino, range, mode: mode) }
    }

    public func commit() throws(Errno) {
        try routed { (s) throws(Errno) in try s.commit() }
    }

    public func sync(reportingTo handle: UInt64?) throws(Errno) {
        try routed { (s) throws(Errno) in try s.sync(reportingTo: handle) }
    }
}
