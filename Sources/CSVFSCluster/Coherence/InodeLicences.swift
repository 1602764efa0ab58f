import CSVFS
import Foundation
import LockManager
import Logging

/// The I/O shell around `InodeLicenceTable` and `NodeMetadataCache`: sends the table's lock requests through
/// the node's `LockClient`, answers its blocking callbacks, makes FUSE threads wait for the EX locks their
/// changes need, and drops the kernel's attributes of an inode before its lock goes to another node (and
/// tells the coordinator the mtime of its overwrites in place first).
final class InodeLicences: @unchecked Sendable {
    // @unchecked: `table` and `cache` are reached only with `condition` locked.
    private let condition = NSCondition()
    private var table = InodeLicenceTable()
    private var cache = NodeMetadataCache()
    private let client: LockClient
    private let notifier: KernelNotifier
    private let invalidations = CacheInvalidationMetrics()
    private let logger: Logger
    /// Tells the coordinator that an inode was overwritten in place (its mtime changed).
    private let tellWrites: @Sendable (UInt64) throws(Errno) -> Void
    /// Where a release that must tell the coordinator first does so: off the lock client's threads, which
    /// the metadata call's answer may need.
    private let releases = DispatchQueue(label: "csvfs.licence-releases")
    /// While calls skip the locks (the node is alone), nothing is cached: they do not keep the cache right.
    private var bypassing = false
    /// Values read before this event (before the last switch between alone and shared) are not cached:
    /// the locks did not cover all of that time.
    private var cacheFloor: UInt64 = 0
    /// How long a change waits for its locks before it fails with EIO.
    let patience: CallPatience
    private var changeTimeout: Duration { patience.timeout }
    /// How long a licence request may wait at the master (it is only asked, never waited for).
    private static let licenceTimeout: Duration = .seconds(120)

    init(client: LockClient, notifier: KernelNotifier, patience: CallPatience, logger: Logger,
         tellWrites: @escaping @Sendable (UInt64) throws(Errno) -> Void) {
        self.tellWrites = tellWrites
        self.client = client
        self.notifier = notifier
        self.patience = patience
        self.logger = logger
    }

    /// Another node waits for the inode's lock (the lock client's blocking callback).
    func blocked(_ ino: UInt64) {
        apply { $0.blocked(ino) }
    }

    func ticket() -> UInt64 { locked { table, _ in table.events } }

    func isLicensed(_ ino: UInt64, since ticket: UInt64) -> Bool {
        guard !client.isFenced else { return false }
        return locked { table, _ in table.isLicensed(ino, since: ticket) }
    }

    func want(_ ino: UInt64, mode: LockMode = .pr) { apply { $0.want(ino, mode: mode) } }

    /// The node fenced itself: its locks are gone, and with them what they protected. The kernel's attributes
    /// go too (it would answer stat from them for up to `licensedSeconds` while another node changes the
    /// file; pages follow at the next read, whose attribute check then fails).
    func fenced() {
        let licensed = locked { table, cache in
            cache.dropAll()
            return table.entries.compactMap { ino, entry in if case .held = entry.state { ino } else { nil } }
        }
        for ino in licensed { notifier.invalidateAttributes(ino) }
        invalidations.droppedKernelAttributes(count: licensed.count)
    }

    /// Asks for the licences of `inodes` that this node lacks, all at once, and waits until they are
    /// granted or refused, or `deadline` passes: what is read afterwards may be cached. (Read before, it
    /// could not: another node may change it before the grant.)
    func awaitLicences(_ inodes: [UInt64], until deadline: ContinuousClock.Instant) {
        condition.lock()
        let directives = inodes.compactMap { table.want($0) }
        condition.unlock()
        for directive in directives { run(directive) }
        condition.lock()
        defer { condition.unlock() }
        guard inodes.contains(where: { table.isRequesting($0) }) else { return }
        condition.unlock()
        FUSERequestThread.willWait()
        condition.lock()
        let until = Date(timeIntervalSinceNow: Double((deadline - .now) / .milliseconds(1)) / 1000)
        while inodes.contains(where: { table.isRequesting($0) }), condition.wait(until: until) {}
    }
    func forgotten(_ ino: UInt64) { apply { $0.forgotten(ino) } }

    // MARK: the cache, under the licences

    func cachedAttributes(_ ino: UInt64) -> InodeAttributes? {
        guard !client.isFenced else { return nil }
        return locked { _, cache in cache.attributes(ino) }
    }

    func cachedName(_ name: [UInt8], in parent: UInt64) -> NodeMetadataCache.Name? {
        guard !client.isFenced else { return nil }
        return locked { _, cache in cache.name(name, in: parent) }
    }

    func cachedMap(_ ino: UInt64) -> CachedFileMap? {
        guard !client.isFenced else { return nil }
        return locked { _, cache in cache.map(ino) }
    }

    /// The size this node last saw of `ino`, however old: a hint for choosing a call, never an answer.
    func sizeHint(_ ino: UInt64) -> UInt64? { locked { _, cache in cache.sizeHint(ino) } }

    /// Whether a value of `ino` read after `ticket` may be kept now.
    /// `table` is passed in: it is the one `locked` holds for the caller.
    private func mayCache(_ ino: UInt64, readAfter ticket: UInt64, in table: InodeLicenceTable) -> Bool {
        !bypassing && ticket >= cacheFloor && table.isLicensed(ino, since: ticket)
    }

    /// Keeps attributes read after `ticket`, if the inode's licence allows.
    func store(_ attributes: InodeAttributes, readAfter ticket: UInt64) {
        locked { table, cache in
            cache.hintSize(attributes)
            if mayCache(attributes.ino, readAfter: ticket, in: table) { cache.store(attributes) }
        }
    }

    func store(_ ino: UInt64, size: UInt64, window: Range<Int64>, segments: [FileSegment], readAfter ticket: UInt64) {
        locked { table, cache in
            if mayCache(ino, readAfter: ticket, in: table) { cache.store(ino, size: size, window: window, segments: segments) }
        }
    }

    func store(_ name: [UInt8], in parent: UInt64, as entry: NodeMetadataCache.Name, readAfter ticket: UInt64) {
        locked { table, cache in
            if mayCache(parent, readAfter: ticket, in: table) { cache.store(name, in: parent, as: entry) }
        }
    }

    /// Calls are about to skip the locks: the cache goes, and stays empty until `endBypass`.
    func startBypass() {
        locked { table, cache in
            bypassing = true
            cache.dropAll()
            cacheFloor = table.touch()
        }
    }

    /// Every call takes the locks again: what is read from now on may be cached under them.
    func endBypass() {
        locked { table, _ in
            bypassing = false
            cacheFloor = table.touch()
        }
    }

    var cached: (attributes: Int, names: Int, maps: Int) { locked { _, cache in cache.count } }

    // MARK: overwrites in place

    /// Under a change of `ino` (so under EX): an overwrite left the map alone and changed the mtime.
    func wroteInPlace(_ ino: UInt64) { locked { _, cache in cache.wroteInPlace(ino) } }

    /// Under a change of `ino`: what the change made stale.
    func dropChanged(_ ino: UInt64) { locked { _, cache in cache.dropChanged(ino) } }

    func hasWrittenInPlace(_ ino: UInt64) -> Bool { locked { _, cache in cache.writtenInPlace.contains(ino) } }

    /// Tells the coordinator about the overwrites in place of `ino`, if any, holding the EX lock they were
    /// made under (so it cannot go to another node before the coordinator knows).
    func tellWrittenInPlace(_ ino: UInt64) throws(Errno) {
        condition.lock()
        // Overwrites in place are made under EX, and only a release ends that, taking them along: so the
        // lock is held in EX and the change joins it without waiting.
        guard cache.writtenInPlace.contains(ino), table.joinChange(ino) else {
            condition.unlock()
            return
        }
        let taken = cache.takeWrittenInPlace(ino)
        condition.unlock()
        defer { apply { $0.finishChange(ino) } }
        if taken { try tell(ino) }
    }

    /// Tells the coordinator about the overwrites of `ino` taken from the cache; they are put back if it
    /// cannot be told, for the next try.
    private func tell(_ ino: UInt64) throws(Errno) {
        do throws(Errno) {
            try tellWrites(ino)
        } catch {
            locked { _, cache in cache.wroteInPlace(ino) }
            throw error
        }
    }

    func tellAllWrittenInPlace() throws(Errno) {
        for ino in locked({ _, cache in cache.writtenInPlace }) { try tellWrittenInPlace(ino) }
    }

    // MARK: changes

    /// Runs `body` holding the EX locks of `inodes` (taken in ascending order, so two changes never wait for
    /// each other), then drops what they changed from the cache: the attributes and maps of every inode
    /// locked, the names `names` and, for `emptied` (directories removed or replaced), all their names.
    /// Overwrites in place of the inodes are told to the coordinator first, so the change comes after them
    /// (a utimes after a write keeps its time). With `keepsCache` the body drops what it changed itself.
    func changing<R>(_ inodes: [UInt64], names: [(parent: UInt64, name: [UInt8])] = [], emptied: [UInt64] = [],
                     keepsCache: Bool = false, _ body: () throws(Errno) -> R) throws(Errno) -> R {
        let order = Array(Set(inodes)).sorted()
        if patience.isExhausted { throw .io }
        let deadline = Date(timeIntervalSinceNow: Double(patience.remaining / .milliseconds(1)) / 1000)
        var holding: [UInt64] = []
        defer {
            locked { _, cache in
                if !keepsCache { for ino in order { cache.dropChanged(ino) } }
                for ino in emptied { cache.drop(ino) }
                for (parent, name) in names { cache.dropName(name, in: parent) }
            }
            for ino in holding { apply { $0.finishChange(ino) } }
        }
        for ino in order {
            try acquire(ino, before: deadline)
            holding.append(ino)
        }
        if !keepsCache {
            for ino in order where locked({ _, cache in cache.takeWrittenInPlace(ino) }) { try tell(ino) }
        }
        return try body()
    }

    private func acquire(_ ino: UInt64, before deadline: Date) throws(Errno) {
        condition.lock()
        while true {
            let step = table.startChange(ino)
            switch step {
            case .proceed:
                condition.unlock()
                return
            case .wait(let directive?):
                let tellFirst = dropCache(for: directive)
                condition.unlock()
                run(directive, tellingWritesFirst: tellFirst)
                condition.lock()
            case .wait(nil):
                if !FUSERequestThread.wait(on: condition, until: deadline) && Date() >= deadline {
                    let directive = table.abandonedChange(ino)
                    let tellFirst = directive.map { dropCache(for: $0) } ?? false
                    condition.unlock()
                    if let directive { run(directive, tellingWritesFirst: tellFirst) }
                    logger.error("no lock on inode \(ino) within \(changeTimeout): the change fails with EIO")
                    throw .io
                }
            }
        }
    }

    // MARK: running the table

    private func locked<R>(_ body: (inout InodeLicenceTable, inout NodeMetadataCache) -> R) -> R {
        condition.lock()
        defer { condition.unlock() }
        return body(&table, &cache)
    }

    /// Applies an event to the table and runs what it says, outside the lock.
    private func apply(_ event: (inout InodeLicenceTable) -> InodeLicenceTable.Directive?) {
        condition.lock()
        let directive = event(&table)
        let tellFirst = directive.map { dropCache(for: $0) } ?? false
        condition.broadcast()
        condition.unlock()
        if let directive { run(directive, tellingWritesFirst: tellFirst) }
    }

    /// Called with the condition locked, in the same step as the table's transition: nothing the lock
    /// protected survives its release or conversion. Answers whether a release must first tell the
    /// coordinator about overwrites in place.
    private func dropCache(for directive: InodeLicenceTable.Directive) -> Bool {
        switch directive {
        case .convert(let ino, _):
            cache.drop(ino)
            invalidations.droppedNodeCache()
            return false
        case .release(let ino, _, _):
            cache.drop(ino)
            invalidations.droppedNodeCache()
            return cache.takeWrittenInPlace(ino)
        case .request:
            return false
        }
    }

    private func run(_ directive: InodeLicenceTable.Directive, tellingWritesFirst: Bool = false) {
        switch directive {
        case .request(let ino, let mode):
            let timeout = mode == .ex ? changeTimeout : Self.licenceTimeout
            Task {
                do {
                    let (handle, _) = try await client.lock(InodeLock.metadata.resource(ino), mode: mode, timeout: timeout)
                    apply { $0.granted(ino, handle: handle, mode: mode) }
                } catch {
                    apply { $0.failed(ino) }
                }
            }
        case .convert(let ino, let handle):
            Task {
                do {
                    try await client.convert(handle, to: .ex, flags: .convDeadlock, timeout: changeTimeout)
                    apply { $0.granted(ino, handle: handle, mode: .ex) }
                } catch {
                    apply { $0.failed(ino) }
                }
            }
        case .release(let ino, let handle, let invalidate):
            // Before the unlock: once another node has the lock, its change may return at any moment.
            if invalidate {
                notifier.invalidateAttributes(ino)
                invalidations.droppedKernelAttributes()
            }
            if tellingWritesFirst {
                releases.async { [self] in
                    do throws(Errno) {
                        try tellWrites(ino)
                    } catch {
                        logger.warning("the mtime of overwrites of inode \(ino) did not reach the coordinator: \(error)")
                    }
                    unlock(ino, handle)
                }
            } else {
                unlock(ino, handle)
            }
        }
    }

    private func unlock(_ ino: UInt64, _ handle: LockHandle) {
        Task {
            do {
                try await client.unlock(handle)
            } catch {
                logger.warning("unlocking inode \(ino) failed: \(error)")
            }
            apply { table in
                table.released(ino)
                return nil
            }
        }
    }
}
