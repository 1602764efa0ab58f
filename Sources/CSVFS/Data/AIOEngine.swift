import CLibAIO
import Dispatch
import Glibc
import Primitives

/// LUN I/O through Linux native AIO: callers submit transfers and one reaper thread collects every completion,
/// so a few threads keep many requests in flight and a request's transfers run in parallel.
///
/// A transfer's error (a negative `res`) is handed to its caller as that errno; nothing is retried elsewhere.
final class AIOEngine: LUNIO, @unchecked Sendable {
    // @unchecked: the AIO context is the kernel's, safe to use from any thread; `reaper` is written once in
    // init and read once in close.
    private let context: io_context_t
    private let fd: Int32
    /// Asked before each write is submitted: a refused one fails its batch with EIO unsent.
    private let fence: WriteFence?
    /// Any descriptor that reads 0 bytes at once: `close` submits such a read to tell the reaper to stop.
    private let wakeFD: Int32
    /// One per request in flight, so io_submit never meets a full context (EAGAIN).
    private let slots: DispatchSemaphore
    private var reaper = pthread_t()
    private let closed = Locked(false)
    private let metrics = LUNIOMetrics()

    static let depth: Int32 = 256

    init(fd: FileDescriptor, wakeFD: FileDescriptor) throws(Errno) {
        var context: io_context_t?
        try Self.check { io_setup(Self.depth, &context) }
        self.context = context!
        self.fd = fd.rawValue
        fence = fd.fence
        self.wakeFD = wakeFD.rawValue
        slots = DispatchSemaphore(value: Int(Self.depth))
        let me = Unmanaged.passRetained(self).toOpaque()
        let started = pthread_create(&reaper, nil, { me in
            Unmanaged<AIOEngine>.fromOpaque(me!).takeRetainedValue().reap()
            return nil
        }, me)
        if started != 0 {
            Unmanaged<AIOEngine>.fromOpaque(me).release()
            io_destroy(self.context)
            throw Errno(started)
        }
    }

    /// Transfers that finish together; the first error wins. Kept alive from submission to its last completion.
    private final class Batch: @unchecked Sendable {
        // @unchecked: `remaining` and `error` are reached only under `lock`; `iocbs` is written before submission.
        let iocbs: UnsafeMutablePointer<iocb>
        private let lock = Lock()
        private var remaining: Int
        private var error: Errno?
        private let done: @Sendable (Errno?) -> Void

        init(count: Int, done: @escaping @Sendable (Errno?) -> Void) {
            iocbs = .allocate(capacity: count)
            remaining = count
            self.done = done
        }

        deinit { iocbs.deallocate() }

        /// Returns true for the last transfer of the batch, after calling `done`.
        func finished(_ failure: Errno?) -> Bool {
            let (last, first) = lock.withLock { () -> (Bool, Errno?) in
                if error == nil { error = failure }
                remaining -= 1
                return (remaining == 0, error)
            }
            if last { done(first) }
            return last
        }
    }

    /// Submits the transfers and returns; `done` runs on the reaper thread once all have finished, with the
    /// first error or nil. It must not block: every completion of the engine waits behind it.
    func start(_ transfers: [LUNTransfer], done: @escaping @Sendable (Errno?) -> Void) {
        metrics.record(transfers)
        guard !transfers.isEmpty else { return done(nil) }
        let batch = Batch(count: transfers.count, done: done)
        let retained = Unmanaged.passRetained(batch)
        for (index, transfer) in transfers.enumerated() {
            let control = batch.iocbs + index
            switch transfer.direction {
            case .read: io_prep_pread(control, fd, transfer.buffer, transfer.count, transfer.offset)
            case .write: io_prep_pwrite(control, fd, transfer.buffer, transfer.count, transfer.offset)
            }
            control.pointee.data = retained.toOpaque()
        }
        // One io_submit per transfer, each after taking a slot: a thread never holds slots it has not submitted,
        // so concurrent callers cannot starve each other.
        for index in transfers.indices {
            slots.wait()
            var control: UnsafeMutablePointer<iocb>? = batch.iocbs + index
            // After the wait for a slot, which may outlast the lease.
            if transfers[index].direction == .write, let fence, !fence.admits() {
                slots.signal()
                if batch.finished(.io) { retained.release() }
                continue
            }
            do throws(Errno) {
                try Self.check { io_submit(context, 1, &control) }
            } catch {
                slots.signal()
                if batch.finished(error) { retained.release() }
            }
        }
    }

    func perform(_ transfers: [LUNTransfer]) throws(Errno) {
        let finished = DispatchSemaphore(value: 0)
        let outcome = Locked<Errno?>(nil)
        start(transfers) { error in
            outcome.withLock { $0 = error }
            finished.signal()
        }
        finished.wait()
        if let error = outcome.withLock({ $0 }) { throw error }
    }

    /// The reaper: hands each completion to its batch until the wake-up read of `close` completes.
    private func reap() {
        let capacity = 64
        let events = UnsafeMutablePointer<io_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        var stopping = false
        while !stopping {
            let count: Int32
            do throws(Errno) {
                count = try Self.check { io_getevents(context, 1, Int(capacity), events, nil) }
            } catch {
                fatalError("io_getevents failed: \(error)")
            }
            for event in UnsafeBufferPointer(start: events, count: Int(count)) {
                guard let data = event.data else {
                    stopping = true
                    continue
                }
                let result = Int(bitPattern: event.res)
                if let recorder = LUNWriteRecorder.shared, result > 0, event.obj.pointee.aio_lio_opcode == Int16(IO_CMD_PWRITE.rawValue) {
                    let transfer = event.obj.pointee.u.c
                    recorder.wrote(fd: fd, from: transfer.buf, count: result, at: Int64(transfer.offset))
                }
                let failure: Errno? = result < 0 ? Errno(Int32(-result)) : result < Int(event.obj.pointee.u.c.nbytes) ? .io : nil
                let batch = Unmanaged<Batch>.fromOpaque(data)
                if batch.takeUnretainedValue().finished(failure) { batch.release() }
                // After the batch's `done`: a free slot means its answer is out (see `drain`).
                slots.signal()
            }
        }
    }

    /// Waits until every transfer started so far has finished and its batch's `done` has run. Nothing may be
    /// started meanwhile.
    func drain() {
        for _ in 0..<Self.depth { slots.wait() }
        for _ in 0..<Self.depth { slots.signal() }
    }

    /// Waits for what is in flight, stops the reaper, then frees the context.
    func close() {
        guard closed.withLock({ (closed: inout Bool) -> Bool in
            defer { closed = true }
            return !closed
        }) else { return }
        drain()
        let stop = UnsafeMutablePointer<iocb>.allocate(capacity: 1)
        defer { stop.deallocate() }
        let byte = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
        defer { byte.deallocate() }
        io_prep_pread(stop, wakeFD, byte, 0, 0)
        var control: UnsafeMutablePointer<iocb>? = stop
        do throws(Errno) {
            try Self.check { io_submit(context, 1, &control) }
        } catch {
            fatalError("cannot stop the AIO reaper: \(error)")
        }
        pthread_join(reaper, nil)
        io_destroy(context)
    }

    /// libaio returns -errno rather than setting errno. EINTR (a signal during the call) is retried here, the
    /// one place the engine meets it.
    @discardableResult
    private static func check(_ call: () -> Int32) throws(Errno) -> Int32 {
        while true {
            let result = call()
            if result >= 0 { return result }
            if result != -EINTR { throw Errno(-result) }
        }
    }
}
