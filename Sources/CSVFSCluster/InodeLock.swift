/// The DLM locks a node takes on an inode, one per thing they cover, each named by a letter and the inode
/// number. The lock client has one blocking handler: the name says which part of the node answers it.
enum InodeLock: Character, CaseIterable {
    /// Its attributes, names and extent map (`InodeLicences`).
    case metadata = "i"
    /// Its file locks (`FileLockDelegation`).
    case fileLocks = "p"
    /// The ownership of the VM disk it is (`DiskOwnershipLocks`).
    case disk = "d"
    /// Who protects the image below an open child, and who writes it (`ImageProtectionLocks`).
    case image = "b"

    func resource(_ ino: UInt64) -> String { "\(rawValue)\(ino)" }

    /// The DLM owner (process) a node asks these locks as. The DLM's deadlock search follows waits between
    /// owners, but a licence is given up when asked, never waited out: a node that waits for a disk while it
    /// caches an inode's licence waits for nobody, and the disk's owner, which flushes it and needs that
    /// inode's EX to do so, must not be seen as closing a cycle (the DLM would refuse its request as a
    /// deadlock victim, again and again, and ask nobody to let go).
    var process: UInt32 { self == .disk ? 1 : 0 }

    /// The lock and inode `resource` names, nil if it names no inode lock.
    static func parse(_ resource: String) -> (InodeLock, UInt64)? {
        guard let letter = resource.first, let lock = InodeLock(rawValue: letter),
              let ino = UInt64(resource.dropFirst()) else { return nil }
        return (lock, ino)
    }
}
