import Glibc

/// Flushes of the LUN shared among the callers that need one at the same moment, as a group commit shares
/// its log write: each caller returns once a flush that started after it called has ended, and every caller
/// that comes while one runs waits for, and shares, the next. A flush that started before a caller may not
/// cover the writes that caller made before calling, so it never counts for it.
final class SharedFlush: @unchecked Sendable {
    // @unchecked: the counters are reached only under `mutex`; `flush` runs outside it.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let ended = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let flush: @Sendable () throws(Errno) -> Void
    /// Flushes started and ended, counted from 1; at most one runs at a time.
    private var started = 0
    private var finished = 0
    private var running = false
    /// The latest flush that failed, and how.
    private var failed: (number: Int, error: Errno)?

    init(_ flush: @escaping @Sendable () throws(Errno) -> Void) {
        self.flush = flush
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(ended, nil)
    }

    deinit {
        pthread_cond_destroy(ended)
        pthread_mutex_destroy(mutex)
        ended.deallocate()
        mutex.deallocate()
    }

    /// Returns once a flush that started after this call has ended; throws if any flush that started after this
    /// call failed (a later one that succeeds does not bring back what a failed one lost, as Linux drops the
    /// pages whose writeback failed).
    func run() throws(Errno) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        let needed = started + 1
        while finished < needed {
            if running {
                pthread_cond_wait(ended, mutex)
                continue
            }
            running = true
            started += 1
            let number = started
            pthread_mutex_unlock(mutex)
            let result = Result { () throws(Errno) in try flush() }
            pthread_mutex_lock(mutex)
            running = false
            finished = number
            if case .failure(let error) = result { failed = (number, error) }
            pthread_cond_broadcast(ended)
        }
        if let failed, failed.number >= needed { throw failed.error }
    }
}
