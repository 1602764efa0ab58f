/// Merges a differencing image into its parent: everything the child holds is written into the parent.
/// Afterwards the parent alone reads as the child did; the child is left in place for the caller to remove.
public enum DiskMerger {
    /// Returns the parent's path.
    @discardableResult
    public static func merge(child childPath: String, allowParentMismatch: Bool = false,
                             progress: DiskConverter.Progress? = nil) throws -> String {
        let child = try VirtualDisk.open(childPath, options: .init(allowParentMismatch: allowParentMismatch))
        guard child.layers.count > 1 else {
            throw VHDError.invalidArgument("\(childPath) is not a differencing image; nothing to merge")
        }
        let parentPath = child.layers[1].file.path
        let parent = try VirtualDisk.open(parentPath, options: .init(writable: true))
        let top = child.layers[0]
        let size = child.virtualSize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: DiskConverter.chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < size {
            let extent = try top.extent(at: offset, limit: UInt64(DiskConverter.chunkSize))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(extent.length)])
            switch extent.source {
            case let .data(fileOffset):
                try top.file.read(at: fileOffset, into: part, what: "child data")
                try parent.write(at: offset, from: UnsafeRawBufferPointer(part))
            case .zero:
                part.initializeMemory(as: UInt8.self, repeating: 0)
                try parent.write(at: offset, from: UnsafeRawBufferPointer(part))
            case .parent:
                break
            }
            offset += extent.length
            progress?(offset, size)
        }
        try parent.close()
        return parentPath
    }
}
