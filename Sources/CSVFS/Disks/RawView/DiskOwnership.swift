/// Who may use a VM disk's structures (its allocation table, its VHDX log) on this node. A node reading a
/// disk's raw view holds the disk shared, a node writing it holds it exclusive, and what the node keeps of the
/// disk in memory is valid only while it holds it: when another node asks, the node flushes, forgets, and
/// lets go (as GFS2 does with its glocks). In a cluster this is a DLM lock per disk (`DiskOwnershipLocks`).
public protocol DiskOwnership: Sendable {
    /// Returns once this node holds disk `ino` in at least that mode. Kept until `release` (which the revoke
    /// handler calls). Never asked for exclusive while held shared: the caller lets go first.
    func acquire(_ ino: UInt64, exclusive: Bool) throws(Errno)
    /// Whether this node holds disk `ino` in at least that mode now.
    func holds(_ ino: UInt64, exclusive: Bool) -> Bool
    /// Lets go of the disk; what it protected must be flushed and forgotten first.
    func release(_ ino: UInt64)
    /// `handler` runs when another node wants a disk this node holds, off every lock of this module: it
    /// flushes and forgets the disk, then calls `release`.
    func onRevoke(_ handler: @escaping @Sendable (UInt64) -> Void)
    /// The nodes that own disk `ino` now, cluster-wide (for `user.vhd.owner`).
    func owners(of ino: UInt64) throws(Errno) -> [(node: UInt32, exclusive: Bool)]
}
