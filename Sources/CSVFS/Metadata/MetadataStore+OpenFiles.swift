import Glibc

/// Open files: counts per inode (orphans go at last close) and handles per open file.
extension MetadataStore {
    /// Notes an open of `ino`; returns the handle that names this open file until it is released.
    func opened(_ ino: UInt64) -> UInt64 {
        openCounts[ino, default: 0] += 1
        let handle = nextHandle
        nextHandle += 1
        openHandles[handle] = ino
        return handle
    }

    func released(_ ino: UInt64, handle: UInt64) throws(Errno) {
        openHandles[handle] = nil
        unreportedFlushErrors[handle] = nil
        let count = openCounts[ino, default: 1] - 1
        openCounts[ino] = count > 0 ? count : nil
        guard count <= 0 else { return }
        if orphans.contains(ino) {
            try mutate { try deleteInode(ino) }
        }
    }
}
