import Glibc

/// The metadata service of a node that does not own the metadata: every call is encoded, sent through the
/// channel to the node that does, and its reply decoded. Errors come back as the errno the owner answered;
/// a reply that does not decode is EPROTO, a reply that does not come in time ETIMEDOUT (EIO once the node
/// has fenced itself: see `CallPatience`).
public final class RemoteMetadataService: MetadataService {
    private let channel: any MetadataChannel
    /// This node's id, the first half of every request id.
    public let node: UInt32
    /// How long a call waits for its reply.
    public let patience: CallPatience
    /// Starts at a random point, so the request ids of a restarted node do not repeat its earlier
    /// incarnation's, which a coordinator that remembers answers (failover) would take for resends.
    private let lastSequence = Locked<UInt64>(UInt64.random(in: 0..<(1 << 40)) << 16)
    private let counts = Locked(MetadataCallCounts())
    private let metrics = MetadataCallMetrics()

    public init(channel: any MetadataChannel, node: UInt32, patience: CallPatience = CallPatience(timeout: .seconds(60), fence: nil)) {
        self.channel = channel
        self.node = node
        self.patience = patience
    }

    /// The RPCs sent so far.
    public var counters: MetadataCallCounts { counts.withLock { $0 } }

    /// A call lost with its connection (the coordinator died or gave up the role) is sent again, under the same
    /// id, to whoever serves next, until its timeout: a failover is a pause. A call that must take effect once
    /// is answered again by a coordinator that finds its change committed (`MetadataCallKind.takesEffectOnce`);
    /// the others may run twice.
    private func send(_ call: MetadataCall) throws(Errno) -> MetadataResult {
        if patience.isExhausted { throw .io }
        let deadline = patience.deadline
        let id = MetadataRequestID(node: node, sequence: lastSequence.withLock { $0 += 1; return $0 })
        while true {
            do throws(Errno) {
                return try send(call, id: id, deadline: deadline)
            } catch where error == .timedOut {
                throw patience.expired
            } catch where error == .connectionLost {
                guard ContinuousClock.now < deadline else { throw patience.expired }
                usleep(20_000)
            }
        }
    }

    private func send(_ call: MetadataCall, id: MetadataRequestID, deadline: ContinuousClock.Instant) throws(Errno) -> MetadataResult {
        let kind = call.kind
        let request = MetadataWire.encodeRequest(id: id, call)
        let reply: [UInt8]
        let started = ContinuousClock.now
        do throws(Errno) {
            reply = try channel.exchange(request, deadline: deadline)
        } catch {
            counts.withLock { $0.record(kind, sent: request.count, received: 0, failed: true) }
            metrics.record(kind, nanoseconds: Self.nanoseconds(since: started), failed: true)
            throw error
        }
        let decoded = Result { () throws(Errno) -> MetadataResult in try MetadataWire.decodeReply(reply, id: id, kind: kind) }
        let malformed = if case .failure(.protocolError) = decoded { true } else { false }
        counts.withLock { $0.record(kind, sent: request.count, received: reply.count, failed: malformed) }
        metrics.record(kind, nanoseconds: Self.nanoseconds(since: started), failed: malformed)
        return try decoded.get()
    }

    private static func nanoseconds(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = ContinuousClock.now - start
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
    }

    public func lookup(parent: UInt64, name: [UInt8]) throws(Errno) -> InodeAttributes {
        try attributes(of: send(.lookup(parent: parent, name: name)))
    }

    public func attributes(_ ino: UInt64) throws(Errno) -> InodeAttributes {
        try attributes(of: send(.attributes(ino: ino)))
    }

    public func setAttributes(_ ino: UInt64, _ changes: AttributeChanges) throws(Errno) -> InodeAttributes {
        try attributes(of: send(.setAttributes(ino: ino, changes: changes)))
    }

    public func createNode(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, symlinkTarget: [UInt8]?,
                           caller: Caller) throws(Errno) -> InodeAttributes {
        try attributes(of: send(.createNode(parent: parent, name: name, mode: mode, rdev: rdev,
                                            symlinkTarget: symlinkTarget, caller: caller)))
    }

    public func readlink(_ ino: UInt64) throws(Errno) -> [UInt8] {
        try bytes(of: send(.readlink(ino: ino)))
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(Errno) -> InodeAttributes {
        try attributes(of: send(.link(ino: ino, newParent: newParent, newName: newName)))
    }

    public func unlink(parent: UInt64, name: [UInt8]) throws(Errno) {
        try done(send(.unlink(parent: parent, name: name)))
    }

    public func rmdir(parent: UInt64, name: [UInt8]) throws(Errno) {
        try done(send(.rmdir(parent: parent, name: name)))
    }

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], mode: RenameMode) throws(Errno) {
        try done(send(.rename(parent: parent, name: name, newParent: newParent, newName: newName, mode: mode)))
    }

    public func readdir(_ ino: UInt64, after cookie: Int64, limit: Int, plus: Bool) throws(Errno) -> [DirectoryEntry] {
        guard case .entries(let entries) = try send(.readdir(ino: ino, cookie: cookie, limit: limit, plus: plus)) else {
            throw .protocolError
        }
        return entries
    }

    public func setXattr(_ ino: UInt64, name: [UInt8], value: [UInt8], create: Bool, replace: Bool) throws(Errno) {
        try done(send(.setXattr(ino: ino, name: name, value: value, create: create, replace: replace)))
    }

    public func getXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) -> [UInt8] {
        try bytes(of: send(.getXattr(ino: ino, name: name)))
    }

    public func listXattrs(_ ino: UInt64) throws(Errno) -> [[UInt8]] {
        guard case .names(let names) = try send(.listXattrs(ino: ino)) else { throw .protocolError }
        return names
    }

    public func removeXattr(_ ino: UInt64, name: [UInt8]) throws(Errno) {
        try done(send(.removeXattr(ino: ino, name: name)))
    }

    public func statistics() throws(Errno) -> VolumeStatistics {
        guard case .statistics(let statistics) = try send(.statistics) else { throw .protocolError }
        return statistics
    }

    /// The coordinator takes the opener from the request's id: a node opens only for itself.
    public func opened(_ ino: UInt64, by node: UInt32?) throws(Errno) -> UInt64 {
        guard case .handle(let handle) = try send(.opened(ino: ino)) else { throw .protocolError }
        return handle
    }

    public func released(_ ino: UInt64, handle: UInt64, by node: UInt32?) throws(Errno) {
        try done(send(.released(ino: ino, handle: handle)))
    }

    public func openFiles() throws(Errno) -> [OpenFile] {
        guard case .openFiles(let files) = try send(.openFiles) else { throw .protocolError }
        return files
    }

    public func mapping(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> (size: UInt64, segments: [FileSegment]) {
        guard case .mapping(let size, let segments) = try send(.mapping(ino: ino, range: range)) else { throw .protocolError }
        return (size, segments)
    }

    public func prepareWrite(_ ino: UInt64, _ range: Range<Int64>) throws(Errno) -> [FileSegment] {
        guard case .segments(let segments) = try send(.prepareWrite(ino: ino, range: range)) else { throw .protocolError }
        return segments
    }

    public func completeWrite(_ ino: UInt64, filled: [Range<Int64>], end: Int64) throws(Errno) {
        try done(send(.completeWrite(ino: ino, filled: filled, end: end)))
    }

    public func fallocate(_ ino: UInt64, _ range: Range<Int64>, mode: FallocateMode) throws(Errno) {
        try done(send(.fallocate(ino: ino, range: range, mode: mode)))
    }

    public func commit() throws(Errno) {
        try done(send(.commit))
    }

    public func sync(reportingTo handle: UInt64?) throws(Errno) {
        try done(send(.sync(reportingTo: handle)))
    }

    // The coordinator takes a lock's owner node from the request's id, as it does an opener's.

    public func lockConflict(_ request: FileLock) throws(Errno) -> FileLock? {
        guard case .fileLock(let lock) = try send(.lockConflict(request)) else { throw .protocolError }
        return lock
    }

    public func setLock(_ request: FileLock, wait: UInt64?) throws(Errno) -> Bool {
        guard case .granted(let granted) = try send(.setLock(request, wait: wait)) else { throw .protocolError }
        return granted
    }

    public func cancelLockWait(_ wait: UInt64) throws(Errno) {
        try done(send(.cancelLockWait(wait: wait)))
    }

    public func unlock(_ ino: UInt64, kind: FileLockKind, range: FileLockRange, owner: FileLockOwner) throws(Errno) {
        try done(send(.unlock(ino: ino, kind: kind, range: range, owner: owner.owner)))
    }

    public func releaseRecordLocks(_ ino: UInt64, owner: FileLockOwner) throws(Errno) {
        try done(send(.releaseRecordLocks(ino: ino, owner: owner.owner)))
    }

    public func fileLocks() throws(Errno) -> [FileLock] {
        guard case .fileLocks(let locks) = try send(.fileLocks) else { throw .protocolError }
        return locks
    }

    public func reclaimLocks(_ locks: [FileLock], by node: UInt32?) throws(Errno) {
        try done(send(.reclaimLocks(locks)))
    }

    public func reclaimOpenFiles(_ files: [OpenHandle], by node: UInt32?) throws(Errno) {
        try done(send(.reclaimOpenFiles(files)))
    }

    public func withdrawLocks(_ ino: UInt64, by node: UInt32?) throws(Errno) -> [FileLock] {
        guard case .fileLocks(let locks) = try send(.withdrawLocks(ino: ino)) else { throw .protocolError }
        return locks
    }

    public func depositLocks(_ ino: UInt64, _ locks: [FileLock], by node: UInt32?) throws(Errno) {
        try done(send(.depositLocks(ino: ino, locks)))
    }

    public func lockDelegations() throws(Errno) -> [DelegatedInode] {
        guard case .delegations(let delegations) = try send(.lockDelegations) else { throw .protocolError }
        return delegations
    }

    // The decoder picks the result's case from the call's kind, so a mismatch here cannot come off the wire;
    // the checks only keep the switch total.

    private func attributes(of result: MetadataResult) throws(Errno) -> InodeAttributes {
        guard case .attributes(let attributes) = result else { throw .protocolError }
        return attributes
    }

    private func bytes(of result: MetadataResult) throws(Errno) -> [UInt8] {
        guard case .bytes(let bytes) = result else { throw .protocolError }
        return bytes
    }

    private func done(_ result: MetadataResult) throws(Errno) {
        guard case .done = result else { throw .protocolError }
    }
}
