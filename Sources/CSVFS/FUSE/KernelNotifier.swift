import CFuse

/// Tells the kernel to drop what it cached of an inode, for a cache policy whose lock went to another node.
/// Attached to the FUSE session while it serves and detached before the session is destroyed; detaching waits
/// for a notification in progress, and one sent while detached is a no-op (the kernel has nothing cached then).
public final class KernelNotifier: Sendable {
    private struct Session: @unchecked Sendable {
        // @unchecked: libfuse's notify calls may be made from any thread while the session lives.
        let pointer: OpaquePointer
    }
    private let session = Locked<Session?>(nil)

    public init() {}

    func attach(_ pointer: OpaquePointer) { session.withLock { $0 = Session(pointer: pointer) } }
    func detach() { session.withLock { $0 = nil } }

    /// Drops the kernel's attributes of `ino` (offset -1: the page cache is left alone). This takes no lock in
    /// the kernel (`fuse_reverse_inval_inode` only bumps the attribute version), so it cannot wait for a request
    /// that waits for us. Pages go at the next read: `auto_inval_data` sees the new mtime or size.
    public func invalidateAttributes(_ ino: UInt64) {
        session.withLock { session in
            guard let session else { return }
            // ENOENT: the kernel no longer knows the inode; anything else: the mount is going away.
            _ = fuse_lowlevel_notify_inval_inode(session.pointer, ino, -1, 0)
        }
    }
}
