/// The files open on this node: how often each inode is open (an unlinked inode lives until its last close),
/// a handle for each open file (the `fh` the kernel keeps for it), and the failed flushes of the LUN each
/// open file has yet to hear of. As Linux's errseq does it, every open file hears of a failure once, at its
/// next fsync.
struct OpenFiles {
    private var counts: [UInt64: Int] = [:]
    private var inodeOfHandle: [UInt64: UInt64] = [:]
    /// The cluster node each open file is open on.
    private var nodeOfHandle: [UInt64: UInt32] = [:]
    /// Starts at a random point, so a coordinator's handles do not repeat those of the one before it, which
    /// the nodes still use for their open files (and their locks) after a failover.
    private var nextHandle = UInt64.random(in: 1..<(1 << 62))
    private var unreportedFlushErrors: [UInt64: Errno] = [:]

    /// Notes an open of `ino`; returns the handle that names this open file until it is closed.
    mutating func open(_ ino: UInt64, node: UInt32) -> UInt64 {
        counts[ino, default: 0] += 1
        let handle = nextHandle
        nextHandle += 1
        inodeOfHandle[handle] = ino
        nodeOfHandle[handle] = node
        return handle
    }

    /// An open file a node had under the coordinator before, under the handle that one gave it.
    mutating func reclaim(_ ino: UInt64, handle: UInt64, node: UInt32) {
        guard inodeOfHandle[handle] == nil else { return }
        counts[ino, default: 0] += 1
        inodeOfHandle[handle] = ino
        nodeOfHandle[handle] = node
    }

    /// How many open files each node has on each inode, ordered by node and inode.
    var perNode: [(node: UInt32, ino: UInt64, handles: Int)] {
        var counted: [UInt32: [UInt64: Int]] = [:]
        for (handle, ino) in inodeOfHandle { counted[nodeOfHandle[handle] ?? 0, default: [:]][ino, default: 0] += 1 }
        return counted.keys.sorted().flatMap { node in
            counted[node]!.keys.sorted().map { (node, $0, counted[node]![$0]!) }
        }
    }

    /// Notes the close of one open file; true when it was the inode's last.
    mutating func close(_ ino: UInt64, handle: UInt64) -> Bool {
        inodeOfHandle[handle] = nil
        nodeOfHandle[handle] = nil
        unreportedFlushErrors[handle] = nil
        let count = counts[ino, default: 1] - 1
        counts[ino] = count > 0 ? count : nil
        return count <= 0
    }

    func isOpen(_ ino: UInt64) -> Bool { counts[ino, default: 0] > 0 }

    /// A flush of the LUN that covered writes to `inodes` failed: each file open on them is told once.
    mutating func flushFailed(covering inodes: Set<UInt64>, _ error: Errno) {
        for (handle, ino) in inodeOfHandle where inodes.contains(ino) {
            unreportedFlushErrors[handle] = error
        }
    }

    /// The failed flush the open file `handle` has not heard of yet, if any; it hears of it once.
    mutating func takeFlushError(handle: UInt64) -> Errno? {
        unreportedFlushErrors.removeValue(forKey: handle)
    }
}
