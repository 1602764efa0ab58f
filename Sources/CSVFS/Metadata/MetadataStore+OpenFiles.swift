import Glibc

/// Opens and closes: an orphan (unlinked while open) goes at its last close.
extension MetadataStore {
    /// Notes an open of `ino`; returns the handle that names this open file until it is released.
    func opened(_ ino: UInt64, node: UInt32) -> UInt64 { openFiles.open(ino, node: node) }

    func openFileList() throws(Errno) -> [OpenFile] {
        try openFiles.perNode.map { (open) throws(Errno) -> OpenFile in
            OpenFile(node: open.node, ino: open.ino, handles: UInt32(clamping: open.handles),
                     path: try path(of: open.ino).map { String(decoding: $0, as: UTF8.self) })
        }
    }

    /// One name of `ino` from the root ("/a/b"), nil when it has none. Directories have one name; their
    /// `parent` column leads up.
    func path(of ino: UInt64) throws(Errno) -> [UInt8]? {
        try read {
            var components: [[UInt8]] = []
            var current = ino
            while current != Self.rootInode {
                let statement = try db.statement("SELECT parent, name FROM dirents WHERE ino = ? LIMIT 1")
                statement.bind(.int(current))
                guard try statement.step() else { return nil }
                components.append(statement.blob(1))
                current = UInt64(statement.int64(0))
                // A cycle would mean a damaged database: fsck's business, not a hang here.
                if components.count > 4096 { throw Errno.io }
            }
            return components.isEmpty ? [47] : components.reversed().flatMap { [47] + $0 }
        }
    }

    func released(_ ino: UInt64, handle: UInt64) throws(Errno) {
        guard openFiles.close(ino, handle: handle) else { return }
        if orphans.contains(ino) {
            try mutate { try deleteInode(ino) }
        }
    }
}
