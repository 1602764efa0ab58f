import CSVFS
import CSVFSSystem
import Foundation
import LockManager
import Primitives

/// What a node's mount answers admin tools through, besides files: extended attributes of the root that it
/// computes and never lists (as GlusterFS's `trusted.glusterfs.*` ones). `trusted.` needs CAP_SYS_ADMIN, so
/// only root asks; the answer is JSON.
public enum ClusterControl {
    /// Every file open on any node (`[OpenFile]`), as the coordinator counts them.
    public static let openFilesAttributeName = "trusted.csvfs.open_files"
    static let openFilesAttribute = Array(openFilesAttributeName.utf8)
    /// Every file lock held on any node (`[HeldFileLock]`), as the coordinator keeps them.
    public static let fileLocksAttributeName = "trusted.csvfs.file_locks"
    static let fileLocksAttribute = Array(fileLocksAttributeName.utf8)
    /// The failure-detection settings of the node whose mount is asked (`FailureDetection`).
    public static let failureDetectionAttributeName = "trusted.csvfs.failure_detection"
    static let failureDetectionAttribute = Array(failureDetectionAttributeName.utf8)

    /// Which node owns each VM disk that a node owns (`[DiskOwner]`), as the lock master knows it.
    public static let diskOwnersAttributeName = "trusted.csvfs.disk_owners"
    static let diskOwnersAttribute = Array(diskOwnersAttributeName.utf8)

    /// The answer of a control attribute of the root, nil for any other attribute.
    static func answer(_ name: [UInt8], of service: any MetadataService, failureDetection: FailureDetection,
                       locks: LockClient) throws(Errno) -> [UInt8]? {
        switch name {
        case diskOwnersAttribute:
            do {
                return try encode(DiskOwner.owners(inListing: try blocking { try await locks.listing() }))
            } catch {
                throw .io
            }
        case failureDetectionAttribute:
            return try encode(failureDetection)
        case openFilesAttribute:
            return try encode(service.openFiles())
        case fileLocksAttribute:
            // A locked file is open, so the open files name it (unless its last name went).
            let paths = Dictionary(try service.openFiles().map { ($0.ino, $0.path) }, uniquingKeysWith: { first, _ in first })
            return try encode(service.fileLocks().map { HeldFileLock($0, path: paths[$0.ino] ?? nil) })
        default:
            return nil
        }
    }

    static func encode<T: Encodable>(_ value: T) throws(Errno) -> [UInt8] {
        do {
            return Array(try JSONEncoder().encode(value))
        } catch {
            throw .io
        }
    }

    /// The open files of the cluster whose volume is mounted at `mountpoint`, asked through that mount.
    public static func openFiles(through mountpoint: String) throws -> [OpenFile] {
        try ask(openFilesAttributeName, through: mountpoint)
    }

    /// The failure-detection settings of the node that mounts the volume at `mountpoint`.
    public static func failureDetection(through mountpoint: String) throws -> FailureDetection {
        try ask(failureDetectionAttributeName, through: mountpoint)
    }

    /// The owners of the VM disks of the cluster whose volume is mounted at `mountpoint`.
    public static func diskOwners(through mountpoint: String) throws -> [DiskOwner] {
        try ask(diskOwnersAttributeName, through: mountpoint)
    }

    /// The file locks held in the cluster whose volume is mounted at `mountpoint`, asked through that mount.
    public static func fileLocks(through mountpoint: String) throws -> [HeldFileLock] {
        try ask(fileLocksAttributeName, through: mountpoint)
    }

    private static func ask<T: Decodable>(_ attribute: String, through mountpoint: String) throws -> T {
        let size = csvfs_getxattr(mountpoint, attribute, nil, 0)
        guard size >= 0 else { throw ControlError(mountpoint: mountpoint, errno: errno) }
        // Room to spare: what it answers may have grown since the size was asked.
        var buffer = [UInt8](repeating: 0, count: size + 4096)
        let read = csvfs_getxattr(mountpoint, attribute, &buffer, buffer.count)
        guard read >= 0 else { throw ControlError(mountpoint: mountpoint, errno: errno) }
        return try JSONDecoder().decode(T.self, from: Data(buffer[0..<read]))
    }

    /// One file lock as admins read it.
    public struct HeldFileLock: Sendable, Codable, Equatable {
        public var node: UInt32
        public var ino: UInt64
        /// One of the file's names, nil when it has none left.
        public var path: String?
        /// "posix" for POSIX record and OFD locks (the kernel sends both alike), or "flock".
        public var kind: String
        /// "shared" or "exclusive".
        public var mode: String
        public var start: Int64
        /// The last byte; nil for "to the end of the file".
        public var end: Int64?
        /// The process that took it, as its node numbers it.
        public var pid: UInt32

        init(_ lock: FileLock, path: String?) {
            node = lock.owner.node
            ino = lock.ino
            self.path = path
            kind = lock.kind == .record ? "posix" : "flock"
            mode = lock.mode == .shared ? "shared" : "exclusive"
            start = lock.range.first
            end = lock.range.last == FileLockRange.endOfFile ? nil : lock.range.last
            pid = lock.pid
        }
    }

    /// A node that holds a disk's ownership: "exclusive" (it writes the disk) or "shared" (it reads it).
    public struct DiskOwner: Sendable, Codable, Equatable {
        public var ino: UInt64
        public var node: UInt32
        public var mode: String

        /// The granted `d<ino>` locks of the lock master's listing ("resource NAME ...", then
        /// "  granted ID owner NODE.PROCESS MODE" lines).
        static func owners(inListing listing: String) -> [DiskOwner] {
            var owners: [DiskOwner] = [], disk: UInt64?
            for line in listing.split(separator: "\n") {
                let words = line.split(separator: " ")
                if words.first == "resource" {
                    disk = words.count > 1 ? InodeLock.parse(String(words[1])).flatMap { $0.0 == .disk ? $0.1 : nil } : nil
                } else if let disk, words.count == 5, words[0] == "granted", words[2] == "owner",
                          let node = words[3].split(separator: ".").first.flatMap({ UInt32($0) }) {
                    owners.append(DiskOwner(ino: disk, node: node, mode: words[4] == "EX" ? "exclusive" : "shared"))
                }
            }
            return owners
        }
    }

    struct ControlError: Error, CustomStringConvertible {
        let mountpoint: String
        let errno: Int32
        var description: String { "asking the mount at \(mountpoint): \(String(cString: strerror(errno)))" }
    }
}
