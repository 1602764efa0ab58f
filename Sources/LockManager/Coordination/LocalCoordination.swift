import Foundation
import Primitives

/// The embedded backend: every node on one host, the kernel as arbiter.
///
/// Each node opens the coordination file and holds an OFD write lock on its member byte; the leader
/// also holds the leader byte. OFD locks belong to the open file description, so the instant a process
/// dies the kernel drops them: its membership and its role end with it, and a dead process can never
/// act again, so it is fenced at once.
///
/// Everything happens inside `region` of the file, so the file may be a CSVFS LUN (its superblock names
/// the coordination range that `csvfs format` reserves) or a small file of its own (`Region.ownFile`).
/// Layout, relative to the region: byte 0 leader lock; bytes 64..<278 leader record (epoch u64,
/// node u32, address length u16, address); byte 4096 + node: member lock of that node.
public final class LocalCoordination: CoordinationBackend {
    /// Where in the coordination file the backend locks and writes; it touches no byte outside.
    public struct Region: Sendable, Hashable, CustomStringConvertible {
        public var offset: Int64
        public var length: Int64
        public init(offset: Int64, length: Int64) {
            self.offset = offset
            self.length = length
        }
        /// The whole of a file used for nothing else.
        public static let ownFile = Region(offset: 0, length: LocalCoordination.regionLength)
        public var description: String { "\(offset)+\(length)" }
    }

    public let node: UInt32
    private let path: String
    private let region: Region
    private let fd: Int32
    private struct State {
        var leadership: Leadership?
        var address: String?
        var task: Task<Void, Never>?
        /// The election thread's own open file description, once it holds the leader byte.
        var electionFD: Int32?
        var stopped = false
    }
    private let state = Locked(State())
    private let hub = CoordinationEventHub()
    public static let maxNodes: UInt32 = 256
    private static let recordOffset: Int64 = 64
    private static let recordCapacity = 214
    private static let memberBase: Int64 = 4096
    /// The bytes a region needs: the leader byte and record, then a member byte per node.
    public static let regionLength: Int64 = memberBase + Int64(maxNodes) + 1

    public init(path: String, region: Region, node: UInt32) throws {
        guard node > 0, node <= LocalCoordination.maxNodes else { throw CoordinationError("node id must be 1...\(LocalCoordination.maxNodes)") }
        guard region.offset >= 0, region.length >= LocalCoordination.regionLength, region.offset <= Int64.max - region.length else {
            throw CoordinationError("coordination region \(region) of \(path): needs an offset >= 0 and at least \(LocalCoordination.regionLength) bytes")
        }
        self.node = node
        self.path = path
        self.region = region
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CoordinationError("cannot open \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    /// The leader and the live members as an observer sees them, without joining (for `csvfs status`).
    public static func observe(path: String, region: Region) async throws -> (leader: Leadership?, members: Set<UInt32>) {
        let probe = try LocalCoordination(path: path, region: region, node: maxNodes)
        var members: Set<UInt32> = []
        for node in 1...maxNodes where try probe.isLocked(at: probe.memberByte(node)) { members.insert(node) }
        return (try await probe.leader(), members)
    }

    /// The lowest node id no live process holds on `path`'s region, for a node that joins without one
    /// (nil: all taken). Another process may take it first: `start` then refuses, and the caller asks again.
    public static func firstFreeNode(path: String, region: Region) throws -> UInt32? {
        // Not started, so it holds no member byte of its own to skip.
        let probe = try LocalCoordination(path: path, region: region, node: maxNodes)
        for node in 1...maxNodes where try !probe.isLocked(at: probe.memberByte(node)) { return node }
        return nil
    }

    public func start(address: String) async throws {
        guard try setLock(at: memberByte(node)) else {
            throw CoordinationError("node \(node) is already a live member on \(path)")
        }
        state.withLock { $0.address = address }
        startElection(address: address)
        startObserver()
    }

    /// Gaining the role is event-driven: a thread of its own waits in F_OFD_SETLKW on the leader byte,
    /// through an open file description of its own, and the kernel wakes it the instant the holder
    /// dies. A blocked F_OFD_SETLKW cannot be cancelled without a signal handler (process-wide
    /// state), so a stopped follower's thread stays parked until the leader byte frees, then lets
    /// it go at once without writing the record.
    private func startElection(address: String) {
        let thread = Thread { [self] in
            let electionFD = open(path, O_RDWR | O_CLOEXEC)
            guard electionFD >= 0 else { return }
            do { try OFDLock.waitWriteLock(electionFD, Int64(leaderByte)..<Int64(leaderByte + 1)) } catch {
                close(electionFD)
                return
            }
            let won = state.withLock { s -> Bool in
                guard !s.stopped else { return false }
                let mine = becomeLeader(address: address)
                s.electionFD = electionFD
                s.leadership = mine
                // Under the state lock, so a concurrent stop() publishes its loss after this gain.
                hub.update { $0.own = mine }
                return true
            }
            if !won { close(electionFD) }
        }
        thread.name = "csvfs-election-\(node)"
        thread.start()
    }

    /// Followers learn of a new leader, and everyone of membership changes, by a cheap periodic look
    /// (one pread and about two F_OFD_GETLK per live member every 20 ms): OFD locks have no notifications.
    /// Every 5 ms cost an idle node 7% of a core (release build); 20 ms keeps a follower's news of a new
    /// leader far inside a failover's budget.
    private func startObserver() {
        let task = Task { [weak self] in
            var goneEpoch: Epoch = 0
            while !Task.isCancelled {
                guard let self else { return }
                let leader = self.observedLeader(goneEpoch: &goneEpoch)
                if let members = try? await self.members() {
                    self.hub.update { v in
                        if v.own == nil { v.leader = leader }
                        v.members = members
                    }
                }
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }
        state.withLock { $0.task = task }
    }

    /// The leader named by the record while someone holds the leader byte. A record no newer than a
    /// leader already seen gone is the dead leader's, not yet overwritten by the new holder.
    private func observedLeader(goneEpoch: inout Epoch) -> Leadership? {
        if let mine = ownLeadership() { return mine }
        guard (try? isLocked(at: leaderByte)) == true else {
            if let last = hub.view.leader { goneEpoch = max(goneEpoch, last.epoch) }
            return nil
        }
        guard let record = readRecord(), record.epoch > goneEpoch else { return nil }
        return record
    }

    /// Writes the leader record for the holder of the leader byte; only it writes, so epochs only grow.
    private func becomeLeader(address: String) -> Leadership {
        let old = readRecord()?.epoch ?? 0
        let mine = Leadership(node: node, address: address, epoch: old + 1)
        var buf = [UInt8](repeating: 0, count: 14)
        withUnsafeBytes(of: mine.epoch.bigEndian) { buf.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: node.bigEndian) { buf.replaceSubrange(8..<12, with: $0) }
        let a = Array(address.utf8.prefix(LocalCoordination.recordCapacity - 14))
        withUnsafeBytes(of: UInt16(a.count).bigEndian) { buf.replaceSubrange(12..<14, with: $0) }
        buf += a
        _ = buf.withUnsafeBytes { LUNWriteRecorder.pwrite(fd, $0.baseAddress!, $0.count, off_t(region.offset + LocalCoordination.recordOffset)) }
        _ = LUNWriteRecorder.flush(fd, fsync)
        return mine
    }

    private func readRecord() -> Leadership? {
        var buf = [UInt8](repeating: 0, count: LocalCoordination.recordCapacity)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(region.offset + LocalCoordination.recordOffset)) }
        guard n >= 14 else { return nil }
        let epoch = buf[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let node = buf[8..<12].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let len = Int(buf[12]) << 8 | Int(buf[13])
        guard epoch > 0, 14 + len <= n, let addr = String(validating: buf[14..<(14 + len)], as: UTF8.self) else { return nil }
        return Leadership(node: node, address: addr, epoch: epoch)
    }

    public func leader() async throws -> Leadership? {
        if let mine = ownLeadership() { return mine }
        // The record is trusted only while someone holds the leader byte.
        guard try isLocked(at: leaderByte) else { return nil }
        return readRecord()
    }

    public func ownLeadership() -> Leadership? { state.withLock { $0.leadership } }

    public func members() async throws -> Set<UInt32> {
        // One F_OFD_GETLK over a whole range names one conflicting lock (not necessarily the
        // lowest); split the range around it and ask again: about two calls per live member
        // instead of one per possible node (the master asks every 20 ms).
        var out: Set<UInt32> = [node]
        let base = memberByte(0)
        var ranges: [(start: off_t, end: off_t)] = [(base + 1, base + 1 + off_t(LocalCoordination.maxNodes))]
        while let r = ranges.popLast() {
            guard r.start < r.end, let found = try lockHolder(from: r.start, to: r.end) else { continue }
            let lo = max(found.start, r.start), hi = min(found.end, r.end)
            guard lo < hi else { throw CoordinationError("F_OFD_GETLK named a lock outside the range asked") }
            for b in lo..<hi { out.insert(UInt32(b - base)) }
            ranges.append((r.start, lo))
            ranges.append((hi, r.end))
        }
        return out
    }

    /// A live process is never fenced by this backend: its locks die with it.
    public func isFenced() -> Bool { false }

    public func events() -> AsyncStream<CoordinationEvent> { hub.subscribe() }

    public func stop() async {
        let (task, electionFD) = state.withLock { s -> (Task<Void, Never>?, Int32?) in
            let t = s.task, e = s.electionFD
            s.task = nil
            s.electionFD = nil
            s.leadership = nil
            s.stopped = true
            hub.finish { $0.own = nil }
            return (t, e)
        }
        task?.cancel()
        if let electionFD { close(electionFD) }
        _ = try? unlock(at: memberByte(node))
    }

    private var leaderByte: off_t { off_t(region.offset) }
    private func memberByte(_ node: UInt32) -> off_t { off_t(region.offset + LocalCoordination.memberBase + Int64(node)) }

    // MARK: OFD locks

    private func setLock(at offset: off_t) throws -> Bool {
        do { return try OFDLock.tryWriteLock(fd, Int64(offset)..<Int64(offset + 1)) } catch { throw CoordinationError("\(error)") }
    }

    private func unlock(at offset: off_t) throws {
        do { try OFDLock.unlock(fd, Int64(offset)..<Int64(offset + 1)) } catch { throw CoordinationError("\(error)") }
    }

    /// One lock of another open file description in [start, end), as the byte range it covers.
    private func lockHolder(from start: off_t, to end: off_t) throws -> (start: off_t, end: off_t)? {
        let found: Range<Int64>?
        do { found = try OFDLock.conflictingLock(fd, Int64(start)..<Int64(end)) } catch { throw CoordinationError("\(error)") }
        return found.map { (off_t($0.lowerBound), off_t(min($0.upperBound, Int64(end)))) }
    }

    /// Whether another open file description holds a lock on the byte (our own locks do not count).
    private func isLocked(at offset: off_t) throws -> Bool {
        try lockHolder(from: offset, to: offset + 1) != nil
    }
}
