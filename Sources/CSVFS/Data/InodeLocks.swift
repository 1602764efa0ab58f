import Glibc

/// Per-inode reader/writer locks for the data path: I/O holds its inode shared, and whatever moves or frees
/// the inode's blocks (truncate, hole punching, read-modify-write of partial blocks) holds it exclusive, so no
/// write ever lands in blocks that were given to another file meanwhile, and no two writes patch one block.
///
/// Counts under one mutex rather than pthread rwlocks: a read in flight on the AIO engine gives its shared
/// hold back on the thread that reaps its completion, and a pthread rwlock must be unlocked by its owner.
/// Writers go first: a waiting writer holds back new readers, so a stream of reads cannot starve a truncate.
final class InodeLocks: @unchecked Sendable {
    // @unchecked: `table` is reached only under `mutex`.
    private struct State {
        var readers = 0
        var writer = false
        var waitingWriters = 0
        var waiters = 0
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Broadcast when a lock that someone waits for is released; waits are rare (an exclusive hold meets I/O).
    private let released = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var table: [UInt64: State] = [:]

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(released, nil)
    }

    deinit {
        pthread_cond_destroy(released)
        pthread_mutex_destroy(mutex)
        released.deallocate()
        mutex.deallocate()
    }

    func withShared<R, E: Error>(_ ino: UInt64, _ body: () throws(E) -> R) throws(E) -> R {
        lockShared(ino)
        defer { unlockShared(ino) }
        return try body()
    }

    func withExclusive<R, E: Error>(_ ino: UInt64, _ body: () throws(E) -> R) throws(E) -> R {
        lockExclusive(ino)
        defer { unlockExclusive(ino) }
        return try body()
    }

    /// Takes the inode shared; `unlockShared` may come from any thread.
    func lockShared(_ ino: UInt64) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while let state = table[ino], state.writer || state.waitingWriters > 0 {
            wait(ino)
        }
        table[ino, default: State()].readers += 1
    }

    func unlockShared(_ ino: UInt64) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        table[ino]!.readers -= 1
        releasedOne(ino)
    }

    func lockExclusive(_ ino: UInt64) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        table[ino, default: State()].waitingWriters += 1
        while let state = table[ino], state.writer || state.readers > 0 {
            wait(ino)
        }
        table[ino]!.waitingWriters -= 1
        table[ino]!.writer = true
    }

    func unlockExclusive(_ ino: UInt64) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        table[ino]!.writer = false
        releasedOne(ino)
    }

    /// Under the mutex.
    private func wait(_ ino: UInt64) {
        table[ino]!.waiters += 1
        pthread_cond_wait(released, mutex)
        table[ino]!.waiters -= 1
    }

    /// Under the mutex: wakes the inode's waiters, and forgets an inode nobody holds or waits for.
    private func releasedOne(_ ino: UInt64) {
        let state = table[ino]!
        if state.waiters > 0 {
            pthread_cond_broadcast(released)
        } else if state.readers == 0 && !state.writer && state.waitingWriters == 0 {
            table[ino] = nil
        }
    }
}
