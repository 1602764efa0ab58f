import CFuse
import Dispatch
import Foundation
import Glibc

/// The loop that reads FUSE requests and runs them on a pool of threads.
///
/// Why not libfuse's multi-threaded loop: all its idle workers sleep in `read` on the device and the kernel
/// wakes them first-in first-out, so each request of a chain (a create is GETATTR, LOOKUP, CREATE, RELEASE)
/// wakes a different, cold thread, often on the other CPU. On a VM that halts idle vCPUs, a cross-CPU
/// wake-up costs more than the metadata operation itself.
///
/// So here at most one thread, the reader, waits for requests; the device is non-blocking and every other
/// thread that finds it empty parks itself (last in, first out, so the hottest thread is reused).
/// - A metadata request runs on the thread that read it, which keeps reading afterwards: metadata requests
///   serialise on the metadata store anyway and never wait for another request's I/O.
/// - Before running a request that can take long (data I/O, fsync, truncation, anything unknown), the reader
///   gives up its role and wakes a parked thread (or starts one) to take it, so data requests run in
///   parallel. It skips the wake when other threads are busy with long requests and nothing waits on the
///   device: the first of them to finish reads next. Threads that finish read again at once, so under a deep
///   queue nobody sleeps or is woken.
/// - After a metadata reply the reader polls the device for a short while before sleeping: the next request
///   of a chain usually comes within microseconds, and catching it saves a wake-up.
///
/// Exit: the kernel ends the connection on unmount (the read fails with ENODEV), or a handler installed by
/// `fuse_set_signal_handlers` calls `fuse_session_exit`. Exit signals are unblocked only on the reader, so
/// they interrupt its wait.
final class FUSERequestLoop: @unchecked Sendable {
    // @unchecked: every mutable field is reached only under `mutex`; the session is libfuse's, made for use
    // from several threads.
    private let session: OpaquePointer
    private let device: Int32
    private let maxThreads: Int
    /// A raw pthread mutex rather than `Lock`: parked threads wait on condition variables tied to it.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var hasReader = false
    private var stopping = false
    private var threadCount = 1
    /// Threads running a request that can take long.
    private var busy = 0
    private var parked: [ParkedThread] = []
    private var spawned: [pthread_t] = []
    private static let exitSignals: [Int32] = [SIGHUP, SIGINT, SIGTERM]
    /// How long the reader polls the empty device after a metadata reply before it sleeps.
    private static let pollAfterMetadata: UInt64 = 50_000

    private final class ParkedThread: @unchecked Sendable {
        // @unchecked: `madeReader` is reached only under the loop's mutex.
        let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        var madeReader = false
        init() { pthread_cond_init(condition, nil) }
        deinit {
            pthread_cond_destroy(condition)
            condition.deallocate()
        }
    }

    init(session: OpaquePointer, maxThreads: Int) {
        self.session = session
        self.device = fuse_session_fd(session)
        self.maxThreads = max(1, maxThreads)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Serves requests on the calling thread (the first reader) and the threads it starts until the session
    /// ends; returns once every thread has finished its request.
    func run() {
        setExitSignals(blocked: true)
        _ = fcntl(device, F_SETFL, fcntl(device, F_GETFL) | O_NONBLOCK)
        lock()
        hasReader = true
        unlock()
        serve(asReader: true)
        lock()
        let threads = spawned
        unlock()
        for thread in threads { pthread_join(thread, nil) }
        fuse_session_reset(session)
    }

    /// Whether a request runs on the reader without handing the role over. `header` is the start of the
    /// request as read from the device; nil when the kernel spliced it into a pipe, which only large writes are.
    static func runsOnReader(header: UnsafeRawBufferPointer?) -> Bool {
        guard let header, header.count >= MemoryLayout<fuse_in_header>.size else { return false }
        let opcode = header.loadUnaligned(fromByteOffset: MemoryLayout<fuse_in_header>.offset(of: \.opcode)!,
                                          as: UInt32.self)
        switch fuse_opcode(rawValue: opcode) {
        case FUSE_LOOKUP, FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_GETATTR, FUSE_READLINK, FUSE_SYMLINK, FUSE_MKNOD,
             FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME, FUSE_RENAME2, FUSE_LINK, FUSE_CREATE, FUSE_STATFS,
             FUSE_RELEASE, FUSE_SETXATTR, FUSE_GETXATTR, FUSE_LISTXATTR, FUSE_REMOVEXATTR, FUSE_FLUSH,
             FUSE_OPENDIR, FUSE_READDIR, FUSE_READDIRPLUS, FUSE_RELEASEDIR, FUSE_ACCESS, FUSE_INTERRUPT,
             // Lock calls that never wait for a grant (SETLKW is the one that does: it may sleep for ever).
             FUSE_GETLK, FUSE_SETLK:
            return true
        case FUSE_OPEN:
            // An open with O_TRUNC truncates under the file's exclusive lock, so it may wait for writes.
            let flagsOffset = MemoryLayout<fuse_in_header>.size
            guard header.count >= flagsOffset + MemoryLayout<fuse_open_in>.size else { return false }
            return header.loadUnaligned(fromByteOffset: flagsOffset, as: UInt32.self) & UInt32(O_TRUNC) == 0
        default:
            return false
        }
    }

    // MARK: one thread

    private func serve(asReader: Bool) {
        let receiveBuffer = RequestBuffer()
        var buffer = fuse_buf()
        buffer.mem = receiveBuffer.start
        let me = ParkedThread()
        var isReader = asReader
        var pollUntil: UInt64 = 0
        if isReader { setExitSignals(blocked: false) }
        let context = InlineRequest(loop: self)
        pthread_setspecific(InlineRequest.key, Unmanaged.passUnretained(context).toOpaque())
        defer { pthread_setspecific(InlineRequest.key, nil) }
        while true {
            if fuse_session_exited(session) != 0 { return stop() }
            let received = fuse_session_receive_buf(session, &buffer)
            if received == -EINTR { continue }
            if received == -EAGAIN {
                if !isReader {
                    guard becomeReaderOrPark(me) else { return }
                    isReader = true
                    setExitSignals(blocked: false)
                    continue
                }
                if DispatchTime.now().uptimeNanoseconds < pollUntil {
                    sched_yield()
                    continue
                }
                var ready = pollfd(fd: device, events: Int16(POLLIN), revents: 0)
                _ = poll(&ready, 1, -1)
                continue
            }
            if received <= 0 { return stop() }
            let header = buffer.flags.rawValue & FUSE_BUF_IS_FD.rawValue != 0
                ? nil : UnsafeRawBufferPointer(start: buffer.mem, count: Int(received))
            if Self.runsOnReader(header: header) {
                context.start(onReader: isReader)
                fuse_session_process_buf(session, &buffer)
                if context.finish() {
                    // It waited (for a lock), and gave the reader role away before it did.
                    finishLongRequest()
                    isReader = false
                    pollUntil = 0
                    continue
                }
                pollUntil = isReader ? DispatchTime.now().uptimeNanoseconds + Self.pollAfterMetadata : 0
                continue
            }
            if isReader { setExitSignals(blocked: true) }
            startLongRequest(wasReader: isReader)
            isReader = false
            fuse_session_process_buf(session, &buffer)
            finishLongRequest()
            pollUntil = 0
        }
    }

    /// Where one thread reads requests: placed so that a WRITE's data, which follows the request header and
    /// `fuse_write_in`, starts on a block boundary and goes to the LUN with O_DIRECT without a copy. (The
    /// kernel only splices requests into pipes that can hold them whole, and a 1 MiB write needs a pipe larger
    /// than `fs.pipe-max-size` allows without CAP_SYS_RESOURCE, so libfuse reads into memory.)
    private final class RequestBuffer {
        let base: UnsafeMutableRawPointer
        var start: UnsafeMutableRawPointer { base + Self.alignment - Self.writeDataOffset }
        static let alignment = 4096
        static let writeDataOffset = MemoryLayout<fuse_in_header>.size + MemoryLayout<fuse_write_in>.size
        /// libfuse reads at most max_write (1 MiB) plus one page of headers; the rest is margin.
        static let capacity = (1 << 20) + 4 * alignment

        init() {
            base = .allocate(byteCount: Self.capacity + Self.alignment, alignment: Self.alignment)
        }
        deinit { base.deallocate() }
    }

    /// Before a request that can take long: makes sure a thread reads meanwhile when that matters. If other
    /// threads are busy with long requests and nothing waits on the device, nobody needs to: the first of
    /// them to finish reads next, and a parked thread woken now would only go back to sleep.
    fileprivate func startLongRequest(wasReader: Bool) {
        lock()
        if wasReader { hasReader = false }
        let othersBusy = busy > 0
        busy += 1
        unlock()
        var ready = pollfd(fd: device, events: Int16(POLLIN), revents: 0)
        let pending = othersBusy && poll(&ready, 1, 0) > 0
        lock()
        defer { unlock() }
        guard !hasReader, !stopping, !othersBusy || pending else { return }
        if let next = parked.popLast() {
            hasReader = true
            next.madeReader = true
            pthread_cond_signal(next.condition)
        } else if threadCount < maxThreads, startThread() {
            hasReader = true
            threadCount += 1
        }
    }

    private func finishLongRequest() {
        lock()
        busy -= 1
        unlock()
    }

    /// For a thread that found the device empty: reads if nobody does, else parks until made reader.
    /// False when the loop is stopping.
    private func becomeReaderOrPark(_ me: ParkedThread) -> Bool {
        lock()
        defer { unlock() }
        if stopping { return false }
        if !hasReader {
            hasReader = true
            return true
        }
        me.madeReader = false
        parked.append(me)
        while !me.madeReader && !stopping { pthread_cond_wait(me.condition, mutex) }
        return me.madeReader && !stopping
    }

    private func stop() {
        setExitSignals(blocked: true)
        fuse_session_exit(session)
        lock()
        stopping = true
        for thread in parked { pthread_cond_signal(thread.condition) }
        parked.removeAll()
        unlock()
        // A thread waiting in poll learns of the exit from the device: the kernel ends the connection on
        // unmount, which wakes every waiter.
    }

    /// Starts a thread that begins as the reader. Called under the mutex.
    private func startThread() -> Bool {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&thread, nil, { context in
            let loop = Unmanaged<FUSERequestLoop>.fromOpaque(context!).takeRetainedValue()
            loop.serve(asReader: true)
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<FUSERequestLoop>.fromOpaque(context).release()
            return false
        }
        spawned.append(thread)
        return true
    }

    fileprivate func setExitSignals(blocked: Bool) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in Self.exitSignals { sigaddset(&set, signal) }
        pthread_sigmask(blocked ? SIG_BLOCK : SIG_UNBLOCK, &set, nil)
    }

    private func lock() { pthread_mutex_lock(mutex) }
    private func unlock() { pthread_mutex_unlock(mutex) }
}

/// A metadata request the loop runs on the thread that read it. If it must wait (a cluster node waiting for a
/// lock another node holds), the thread first hands the reading over as it does for a long request: else
/// nobody reads the device meanwhile, and a request the kernel queued (holding a directory's lock in the
/// kernel) could be what the grant waits for.
private final class InlineRequest: @unchecked Sendable {
    // @unchecked: reached only by its own thread (through the thread-specific key).
    static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
    let loop: FUSERequestLoop
    private var running = false
    private var onReader = false
    private var handedOver = false

    init(loop: FUSERequestLoop) { self.loop = loop }

    func start(onReader: Bool) {
        running = true
        self.onReader = onReader
        handedOver = false
    }

    /// Whether the request handed the reading over (and counts as a long request now).
    func finish() -> Bool {
        running = false
        return handedOver
    }

    /// Whether `willWait` has run for the request being served.
    var isHandedOver: Bool { handedOver }

    func willWait() {
        guard running, !handedOver else { return }
        handedOver = true
        if onReader { loop.setExitSignals(blocked: true) }
        loop.startLongRequest(wasReader: onReader)
    }
}

/// For code that runs under a FUSE request and is about to block.
public enum FUSERequestThread {
    /// Call before a wait that may be long or may depend on other requests being served.
    public static func willWait() {
        current?.willWait()
    }

    /// A wait for the next event of a table that `condition` guards, called with it locked and returning
    /// with it locked. Under a FUSE request the first wait only lets the request loop go on with other
    /// requests (the wait may last a round trip, a flush on another node or a failover) and returns at once,
    /// so the caller looks at its table again; later ones sleep until a signal or `deadline`. False when
    /// `deadline` passed.
    public static func wait(on condition: NSCondition, until deadline: Date) -> Bool {
        if let request = current, !request.isHandedOver {
            condition.unlock()
            request.willWait()
            condition.lock()
            return true
        }
        return condition.wait(until: deadline)
    }

    private static var current: InlineRequest? {
        pthread_getspecific(InlineRequest.key).map { Unmanaged<InlineRequest>.fromOpaque($0).takeUnretainedValue() }
    }
}
