import NIOCore

/// A `TaskExecutor` that runs jobs on one NIO event loop.
///
/// A task that prefers this executor (`Task(executorPreference:)`, `withTaskExecutorPreference`)
/// runs its nonisolated async code on the loop's thread. For a caller of `LockClient` that means a
/// request is written to the socket from the loop thread itself (no wake-up of the loop), and the
/// reply resumes the caller right there (no hop to the cooperative pool): on a machine with few
/// cores those two thread hand-offs per round trip cost more than the round trip itself.
/// Only code that does not block may run on it: it shares the thread with the connection's I/O.
/// The loop must outlive the tasks that prefer it (NIO drops work given to a loop that has shut down).
public final class EventLoopTaskExecutor: TaskExecutor {
    public let loop: EventLoop

    public init(_ loop: EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        // On the loop already (a continuation resumed by a channel handler): queued behind the
        // current I/O work, no wake-up. From elsewhere: the loop is woken as for any task.
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
