import Glibc

/// Per-inode reader/writer locks for the data path: I/O holds its inode shared, and whatever moves or frees
/// the inode's blocks (truncate, hole punching, first writes into unwritten blocks) holds it exclusive, so no
/// write ever lands in blocks that were given to another file meanwhile.
final class InodeLocks: Sendable {
    private final class RWLock: @unchecked Sendable {
        // @unchecked: pthread_rwlock_t is itself the synchronisation; it lives at a stable heap address.
        let rwlock: UnsafeMutablePointer<pthread_rwlock_t>
        var users = 0  // guarded by InodeLocks.table

        init() {
            rwlock = .allocate(capacity: 1)
            pthread_rwlock_init(rwlock, nil)
        }

        deinit {
            pthread_rwlock_destroy(rwlock)
            rwlock.deallocate()
        }
    }

    private let table = Locked<[UInt64: RWLock]>([:])

    func withShared<R, E: Error>(_ ino: UInt64, _ body: () throws(E) -> R) throws(E) -> R {
        let lock = acquire(ino)
        pthread_rwlock_rdlock(lock.rwlock)
        defer {
            pthread_rwlock_unlock(lock.rwlock)
            release(ino, lock)
        }
        return try body()
    }

    func withExclusive<R, E: Error>(_ ino: UInt64, _ body: () throws(E) -> R) throws(E) -> R {
        let lock = acquire(ino)
        pthread_rwlock_wrlock(lock.rwlock)
        defer {
            pthread_rwlock_unlock(lock.rwlock)
            release(ino, lock)
        }
        return try body()
    }

    private func acquire(_ ino: UInt64) -> RWLock {
        table.withLock { table in
            let lock = table[ino] ?? RWLock()
            lock.users += 1
            table[ino] = lock
            return lock
        }
    }

    /// Idle locks stay for the next request on the same inode (a lock per request would cost an allocation
    /// each time) until there are many of them.
    private static let idleLimit = 4096

    private func release(_ ino: UInt64, _ lock: RWLock) {
        table.withLock { table in
            lock.users -= 1
            if table.count > Self.idleLimit {
                table = table.filter { $0.value.users > 0 }
            }
        }
    }
}
