import CFuse
import Glibc

/// POSIX record, OFD and flock locks, served cluster-wide (the kernel sends them here once INIT asked for
/// FUSE_CAP_POSIX_LOCKS and FUSE_CAP_FLOCK_LOCKS, and keeps none itself).
extension FUSEFilesystem {
    func getlk(_ reply: consuming FUSEReply, ino: UInt64, file: fuse_file_info, lock: UnsafeMutablePointer<Glibc.flock>) {
        do throws(Errno) {
            guard let (mode, range) = try Self.request(lock.pointee), let mode else { throw .invalid }
            let request = FileLock(ino: ino, kind: .record, mode: mode, range: range, owner: locks.owner(file.lock_owner),
                                   handle: file.fh, pid: UInt32(bitPattern: lock.pointee.l_pid))
            var answer = Glibc.flock()
            answer.l_whence = Int16(SEEK_SET)
            if let holder = try locks.conflict(with: request) {
                answer.l_type = Int16(holder.mode == .exclusive ? F_WRLCK : F_RDLCK)
                answer.l_start = off_t(holder.range.first)
                answer.l_len = holder.range.last == FileLockRange.endOfFile ? 0 : off_t(holder.range.last - holder.range.first + 1)
                answer.l_pid = pid_t(bitPattern: holder.pid)
            } else {
                answer.l_type = Int16(F_UNLCK)
            }
            reply.lock(answer)
        } catch {
            reply.error(error)
        }
    }

    func setlk(_ reply: consuming FUSEReply, ino: UInt64, file: fuse_file_info, lock: Glibc.flock, sleep: Bool) {
        do throws(Errno) {
            guard let (mode, range) = try Self.request(lock) else { throw .invalid }
            guard let mode else {
                try locks.unlock(ino, kind: .record, range: range, owner: file.lock_owner)
                return reply.ok()
            }
            let request = FileLock(ino: ino, kind: .record, mode: mode, range: range, owner: locks.owner(file.lock_owner),
                                   handle: file.fh, pid: UInt32(bitPattern: lock.l_pid))
            try take(request, waiting: sleep, for: reply.request)
            reply.ok()
        } catch {
            reply.error(error)
        }
    }

    func flockRequest(_ reply: consuming FUSEReply, ino: UInt64, file: fuse_file_info, operation: Int32) {
        do throws(Errno) {
            let mode: FileLockMode
            switch operation & ~LOCK_NB {
            case LOCK_UN:
                try locks.unlock(ino, kind: .flock, range: .wholeFile, owner: file.lock_owner)
                return reply.ok()
            case LOCK_SH: mode = .shared
            case LOCK_EX: mode = .exclusive
            default: throw .invalid
            }
            let request = FileLock(ino: ino, kind: .flock, mode: mode, range: .wholeFile, owner: locks.owner(file.lock_owner),
                                   handle: file.fh, pid: UInt32(bitPattern: fuse_req_ctx(reply.request)!.pointee.pid))
            try take(request, waiting: operation & LOCK_NB == 0, for: reply.request)
            reply.ok()
        } catch {
            reply.error(error)
        }
    }

    /// A close(): the closing process's POSIX locks on the file go.
    func flush(_ reply: consuming FUSEReply, ino: UInt64, owner: UInt64) {
        perform(reply) { () throws(Errno) in try locks.closed(ino, owner: owner) }
    }

    /// Takes a lock; a blocking one waits until granted, or until a signal to the waiting process makes the kernel
    /// interrupt the request (EINTR, which the kernel restarts if the signal's handler asked for that).
    private func take(_ request: FileLock, waiting: Bool, for fuseRequest: fuse_req_t) throws(Errno) {
        guard waiting else { return try locks.lock(request, wait: nil) }
        let interrupt = LockWaitInterrupt(locks: locks, wait: UInt64.random(in: 1...UInt64.max))
        let context = Unmanaged.passRetained(interrupt)
        fuse_req_interrupt_func(fuseRequest, { _, context in
            Unmanaged<LockWaitInterrupt>.fromOpaque(context!).takeUnretainedValue().fire()
        }, context.toOpaque())
        defer {
            // Once unset (under the request's lock, which libfuse holds while it runs the function), the function
            // is not running and will not run: the context may go.
            fuse_req_interrupt_func(fuseRequest, nil, nil)
            context.release()
        }
        try locks.lock(request, wait: interrupt.wait)
    }

    /// The mode (nil to unlock) and range of a kernel lock request; nil for a type that is none of the three.
    private static func request(_ lock: Glibc.flock) throws(Errno) -> (FileLockMode?, FileLockRange)? {
        // libfuse turned the kernel's first and last byte into a start and a length (0: to the end of the file).
        guard lock.l_start >= 0, lock.l_len >= 0 else { throw .invalid }
        let (end, overflow) = Int64(lock.l_start).addingReportingOverflow(Int64(lock.l_len) - 1)
        let range = FileLockRange(first: Int64(lock.l_start), last: lock.l_len == 0 || overflow ? FileLockRange.endOfFile : end)
        switch Int32(lock.l_type) {
        case F_RDLCK: return (.shared, range)
        case F_WRLCK: return (.exclusive, range)
        case F_UNLCK: return (nil, range)
        default: return nil
        }
    }
}

/// What a blocked lock request's interrupt reaches: the wait to cancel.
private final class LockWaitInterrupt: Sendable {
    let locks: NodeFileLocks
    let wait: UInt64

    init(locks: NodeFileLocks, wait: UInt64) {
        self.locks = locks
        self.wait = wait
    }

    func fire() { locks.cancel(wait: wait) }
}
