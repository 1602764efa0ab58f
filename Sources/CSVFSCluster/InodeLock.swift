/// The DLM locks a node takes on an inode, one per thing they cover, each named by a letter and the inode
/// number. The lock client has one blocking handler: the name says which part of the node answers it.
enum InodeLock: Character, CaseIterable {
    /// Its attributes, names and extent map (`InodeLicences`).
    case metadata = "i"
    /// Its file locks (`FileLockDelegation`).
    case fileLocks = "p"
    /// The ownership of the VM disk it is (`DiskOwnershipLocks`).
    case disk = "d"

    func resource(_ ino: UInt64) -> String { "\(rawValue)\(ino)" }

    /// The lock and inode `resource` names, nil if it names no inode lock.
    static func parse(_ resource: String) -> (InodeLock, UInt64)? {
        guard let letter = resource.first, let lock = InodeLock(rawValue: letter),
              let ino = UInt64(resource.dropFirst()) else { return nil }
        return (lock, ino)
    }
}
