import Glibc

/// Opens and closes: an orphan (unlinked while open) goes at its last close.
extension MetadataStore {
    /// Notes an open of `ino`; returns the handle that names this open file until it is released.
    func opened(_ ino: UInt64) -> UInt64 { openFiles.open(ino) }

    func released(_ ino: UInt64, handle: UInt64) throws(Errno) {
        guard openFiles.close(ino, handle: handle) else { return }
        if orphans.contains(ino) {
            try mutate { try deleteInode(ino) }
        }
    }
}
