import CSVFS
import CSVFSSystem
import Foundation

/// What a node's mount answers admin tools through, besides files: extended attributes of the root that it
/// computes and never lists (as GlusterFS's `trusted.glusterfs.*` ones). `trusted.` needs CAP_SYS_ADMIN, so
/// only root asks; the answer is JSON.
public enum ClusterControl {
    /// Every file open on any node (`[OpenFile]`), as the coordinator counts them.
    public static let openFilesAttributeName = "trusted.csvfs.open_files"
    static let openFilesAttribute = Array(openFilesAttributeName.utf8)

    static func encode<T: Encodable>(_ value: T) throws(Errno) -> [UInt8] {
        do {
            return Array(try JSONEncoder().encode(value))
        } catch {
            throw .io
        }
    }

    /// The open files of the cluster whose volume is mounted at `mountpoint`, asked through that mount.
    public static func openFiles(through mountpoint: String) throws -> [OpenFile] {
        let size = csvfs_getxattr(mountpoint, openFilesAttributeName, nil, 0)
        guard size >= 0 else { throw ControlError(mountpoint: mountpoint, errno: errno) }
        var buffer = [UInt8](repeating: 0, count: size + 4096)
        let read = csvfs_getxattr(mountpoint, openFilesAttributeName, &buffer, buffer.count)
        guard read >= 0 else { throw ControlError(mountpoint: mountpoint, errno: errno) }
        return try JSONDecoder().decode([OpenFile].self, from: Data(buffer[0..<read]))
    }

    struct ControlError: Error, CustomStringConvertible {
        let mountpoint: String
        let errno: Int32
        var description: String { "asking the mount at \(mountpoint): \(String(cString: strerror(errno)))" }
    }
}
