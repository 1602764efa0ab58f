import CSVFS
import Foundation
import LockManager
import Logging

/// The I/O shell around `FileLockDelegationTable`: runs a node's file-lock calls on its own table for the
/// inodes it keeps, and on the coordinator's for the others; sends the table's DLM requests through the
/// node's `LockClient` and its hand-overs to the coordinator; answers the blocking callbacks of `p` locks.
final class FileLockDelegation: @unchecked Sendable {
    // @unchecked: `table` is reached only with `condition` locked.
    private let condition = NSCondition()
    private var table: FileLockDelegationTable
    private let client: LockClient
    /// The routed service: the coordinator's table, and the hand-overs.
    private let service: any MetadataService
    /// What this node's processes hold on an inode that the coordinator keeps: while they hold some, PR is
    /// kept; they are given back if a withdrawal fails without an answer.
    private let centralLocks: @Sendable (UInt64) -> [FileLock]
    private let logger: Logger
    /// How long a call waits for the inode's DLM lock (another node gives its locks back first) before it
    /// fails with ENOLCK.
    static let waitLimit: Duration = .seconds(120)
    /// EX is asked without queueing; during a DLM recovery even such a request waits, for at most this.
    static let exclusiveTimeout: Duration = .seconds(5)

    let node: UInt32

    init(node: UInt32, client: LockClient, service: any MetadataService, logger: Logger,
         centralLocks: @escaping @Sendable (UInt64) -> [FileLock]) {
        table = FileLockDelegationTable(node: node)
        self.node = node
        self.client = client
        self.service = service
        self.logger = logger
        self.centralLocks = centralLocks
    }

    /// Another node asked for the inode's `p` lock (the lock client's blocking callback).
    func blocked(_ ino: UInt64) {
        apply { $0.blocked(ino) }
    }

    /// A new coordinator knows nothing of what this node keeps: it all goes back.
    func coordinatorChanged() {
        condition.lock()
        let directives = table.coordinatorChanged()
        condition.unlock()
        for directive in directives { run(directive) }
    }

    /// The locks of the inodes this node keeps.
    var localLocks: [FileLock] {
        condition.lock()
        defer { condition.unlock() }
        return table.local.locks
    }

    /// Runs a lock call on `ino`: `local` on this node's table if it keeps the inode's locks (it answers nil
    /// if the call must wait for another owner: the locks go back, and the call goes to the coordinator),
    /// `central` otherwise.
    func serve<R>(_ ino: UInt64, _ want: FileLockDelegationTable.Want,
                  local: (inout FileLockTable) throws(Errno) -> R?,
                  central: () throws(Errno) -> R) throws(Errno) -> R {
        let deadline = ContinuousClock.now + Self.waitLimit
        condition.lock()
        let failuresBefore = table.failures
        while true {
            switch table.begin(ino, want) {
            case .local:
                guard let handle = table.delegation(ino), client.isHeld(handle) else {
                    table.lost(ino)
                    condition.broadcast()
                    condition.unlock()
                    logger.error("the DLM lock of inode \(ino)'s file locks is lost: this node is fenced")
                    throw .noLocks
                }
                let answer: R?
                do throws(Errno) {
                    answer = try local(&table.local)
                } catch {
                    condition.unlock()
                    throw error
                }
                if let answer {
                    let directive = table.localCallDone(ino)
                    condition.unlock()
                    if let directive { run(directive) }
                    return answer
                }
                let directive = table.mustWait(ino)
                condition.unlock()
                if let directive { run(directive) }
                condition.lock()
            case .central:
                condition.unlock()
                defer {
                    let holds = !centralLocks(ino).isEmpty
                    apply { $0.end(ino, holdsLocks: holds) }
                }
                return try central()
            case .wait(let directive?):
                condition.unlock()
                run(directive)
                condition.lock()
            case .wait(nil):
                if table.failures != failuresBefore {
                    condition.unlock()
                    throw .noLocks
                }
                if ContinuousClock.now >= deadline {
                    condition.unlock()
                    logger.error("no DLM lock for the file locks of inode \(ino) within \(Self.waitLimit): ENOLCK")
                    throw .noLocks
                }
                _ = FUSERequestThread.wait(on: condition, until: Date(timeIntervalSinceNow: 0.5))
            }
        }
    }

    /// Runs `body` (a read of the coordinator's table) holding PR on each of `inos`, so the nodes that keep
    /// their locks give them back first.
    func looking<R>(at inos: [UInt64], _ body: () throws(Errno) -> R) throws(Errno) -> R {
        guard let ino = inos.first else { return try body() }
        return try serve(ino, .look, local: { _ in nil }) { () throws(Errno) -> R in
            try looking(at: Array(inos.dropFirst()), body)
        }
    }

    // MARK: running the table

    /// Applies an event to the table and runs what it says, outside the lock.
    private func apply(_ event: (inout FileLockDelegationTable) -> FileLockDelegationTable.Directive?) {
        condition.lock()
        let directive = event(&table)
        condition.broadcast()
        condition.unlock()
        if let directive { run(directive) }
    }

    /// The metadata calls block their thread: they run off the lock client's tasks, which their answers need.
    private static let handOvers = DispatchQueue(label: "csvfs.file-lock-handovers", attributes: .concurrent)

    private func run(_ directive: FileLockDelegationTable.Directive) {
        switch directive {
        case .requestExclusive(let ino):
            Task {
                do {
                    let (handle, _) = try await client.lock(InodeLock.fileLocks.resource(ino), mode: .ex, flags: .noQueue,
                                                            timeout: Self.exclusiveTimeout)
                    apply { $0.exclusiveGranted(ino, handle) }
                } catch {
                    apply { $0.exclusiveRefused(ino) }
                }
            }
        case .withdraw(let ino, let handle):
            Self.handOvers.async { [self] in
                do throws(Errno) {
                    let locks = try service.withdrawLocks(ino, by: nil)
                    apply { $0.withdrawn(ino, handle, locks) }
                } catch .wouldBlock {
                    apply { $0.withdrawRefused(ino, handle) }
                } catch {
                    logger.warning("handing the file locks of inode \(ino) over to this node failed: \(error)")
                    let restoring = centralLocks(ino)
                    apply { $0.withdrawFailed(ino, handle, restoring: restoring) }
                }
            }
        case .requestShared(let ino):
            Task {
                do {
                    let (handle, _) = try await client.lock(InodeLock.fileLocks.resource(ino), mode: .pr, timeout: Self.waitLimit)
                    apply { $0.sharedGranted(ino, handle) }
                } catch {
                    logger.warning("no PR lock for the file locks of inode \(ino): \(error)")
                    apply { $0.failed(ino, handle: nil) }
                }
            }
        case .convertToShared(let ino, let handle):
            Task {
                do {
                    try await client.convert(handle, to: .pr, timeout: Self.waitLimit)
                    apply { $0.sharedGranted(ino, handle) }
                } catch {
                    logger.warning("turning the file-lock lock of inode \(ino) into PR failed: \(error)")
                    apply { $0.failed(ino, handle: handle) }
                }
            }
        case .deposit(let ino, let handle, let locks, _):
            Self.handOvers.async { [self] in
                var logged = false
                while true {
                    do throws(Errno) {
                        try service.depositLocks(ino, locks, by: nil)
                        apply { $0.deposited(ino) }
                        return
                    } catch {
                        // Until the coordinator has them, nobody else may have the DLM lock: it is kept, and
                        // the deposit asked again, unless this node lost it (fenced), and the locks with it.
                        guard client.isHeld(handle) else {
                            logger.error("the file locks of inode \(ino) are lost with this node's DLM lock (fenced)")
                            apply { table in
                                table.lost(ino)
                                return nil
                            }
                            return
                        }
                        if !logged {
                            logged = true
                            logger.warning("giving the file locks of inode \(ino) back failed, retrying: \(error)")
                        }
                        usleep(50_000)
                    }
                }
            }
        case .unlock(let ino, let handle):
            Task {
                do {
                    try await client.unlock(handle)
                } catch {
                    logger.warning("unlocking the file-lock lock of inode \(ino) failed: \(error)")
                }
                apply { table in
                    table.released(ino)
                    return nil
                }
            }
        }
    }
}
