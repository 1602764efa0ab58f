import CSVFS
import Foundation
import LockManager
import Logging
import Primitives

/// A node's ownership of VM disks through the DLM: one lock per disk (`d<ino>`), PR to read its raw view, EX
/// to write it, kept until another node asks (the blocking callback revokes it: the disk is flushed, then the
/// lock goes). The I/O shell around `DiskOwnershipTable`.
final class DiskOwnershipLocks: DiskOwnership, @unchecked Sendable {
    // @unchecked: `table` is reached only with `condition` locked; `revoke` is a `Locked`.
    private let condition = NSCondition()
    private var table = DiskOwnershipTable()
    private let client: LockClient
    /// How long a call waits for a disk another node owns (it flushes first) before it fails.
    private let timeout: Duration
    private let logger: Logger
    private let revoke = Locked<(@Sendable (UInt64) -> Void)?>(nil)

    init(client: LockClient, timeout: Duration, logger: Logger) {
        self.client = client
        self.timeout = timeout
        self.logger = logger
    }

    func acquire(_ ino: UInt64, exclusive: Bool) throws(Errno) {
        let deadline = ContinuousClock.now + timeout
        condition.lock()
        let failuresBefore = table.failures
        while true {
            switch table.want(ino, exclusive: exclusive) {
            case .held(let handle):
                guard client.isHeld(handle) else {
                    // Fenced: the lock is gone, and with it every right to write; asking again fails or starts over.
                    table.lost(ino)
                    logger.error("the ownership of disk inode \(ino) is lost with this node's DLM lock (fenced)")
                    continue
                }
                condition.unlock()
                return
            case .heldShared:
                condition.unlock()
                return
            case .wait(let directive?):
                condition.unlock()
                run(directive)
                condition.lock()
            case .wait(nil):
                if table.failures != failuresBefore || ContinuousClock.now >= deadline {
                    condition.unlock()
                    logger.error("no \(exclusive ? "exclusive" : "shared") ownership of disk inode \(ino): EIO")
                    throw .io
                }
                // The owner may take a flush or a failover to let go: the mount's other requests go on.
                _ = FUSERequestThread.wait(on: condition, until: Date(timeIntervalSinceNow: 0.5))
            }
        }
    }

    func holds(_ ino: UInt64, exclusive: Bool) -> Bool {
        condition.lock()
        let handle = table.holding(ino, exclusive: exclusive)
        condition.unlock()
        return handle.map(client.isHeld) ?? false
    }

    func release(_ ino: UInt64) {
        apply { $0.release(ino) }
    }

    func onRevoke(_ handler: @escaping @Sendable (UInt64) -> Void) {
        revoke.withLock { $0 = handler }
    }

    func owners(of ino: UInt64) throws(Errno) -> [(node: UInt32, exclusive: Bool)] {
        do {
            let listing = try blocking { [client] in try await client.listing() }
            return ClusterControl.DiskOwner.owners(inListing: listing).filter { $0.ino == ino }.map { ($0.node, $0.mode == "exclusive") }
        } catch {
            logger.warning("the lock master did not list the owners of disk inode \(ino): \(error)")
            throw .io
        }
    }

    /// Another node asked for the disk's lock.
    func blocked(_ ino: UInt64) {
        apply { $0.blocked(ino) }
    }

    private func apply(_ event: (inout DiskOwnershipTable) -> DiskOwnershipTable.Directive?) {
        condition.lock()
        let directive = event(&table)
        condition.broadcast()
        condition.unlock()
        if let directive { run(directive) }
    }

    private func run(_ directive: DiskOwnershipTable.Directive) {
        switch directive {
        case .request(let ino, let exclusive):
            Task {
                do {
                    let (handle, _) = try await client.lock(InodeLock.disk.resource(ino), mode: exclusive ? .ex : .pr,
                                                            timeout: timeout, process: InodeLock.disk.process)
                    apply { $0.granted(ino, handle, exclusive: exclusive) }
                } catch {
                    logger.warning("no \(exclusive ? "EX" : "PR") lock for disk inode \(ino): \(error)")
                    apply { table in
                        table.failed(ino)
                        return nil
                    }
                }
            }
        case .revoke(let ino):
            // The flush writes the LUN and waits for I/O in flight: off the lock client's tasks and every lock here.
            let handler = revoke.withLock { $0 }
            DispatchQueue.global().async { [self] in
                if let handler { handler(ino) } else { release(ino) }
            }
        case .unlock(let ino, let handle):
            Task {
                do {
                    try await client.unlock(handle)
                } catch {
                    logger.warning("unlocking disk inode \(ino) failed: \(error)")
                }
                apply { table in
                    table.released(ino)
                    return nil
                }
            }
        }
    }
}
