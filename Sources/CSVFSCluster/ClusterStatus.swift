import CSVFS
import CSVFSSystem
import Foundation
import LockManager

/// What `csvfs status` shows of a volume's cluster, gathered without joining: the coordination backend (the
/// LUN's coordination range, or etcd) says who leads and who is alive, the node records on the LUN what each
/// node told of itself.
public struct ClusterStatus: Sendable, Codable {
    public struct Coordinator: Sendable, Codable {
        public var node: UInt32
        public var address: String
        public var epoch: UInt64
    }
    public struct Node: Sendable, Codable {
        public var id: UInt32
        public var alive: Bool
        public var host: String?
        public var address: String?
        public var mountpoint: String?
        public var pid: Int32?
        public var joinedAt: Date?
        /// Its open files as the coordinator counts them; nil when no mount on this host could be asked.
        public var openFiles: [OpenFile]?
        /// The file locks its processes hold; nil when no mount on this host could be asked.
        public var fileLocks: [ClusterControl.HeldFileLock]?
    }

    /// A VM disk open on some node: what its image says of its chain, and who owns it.
    public struct OpenDisk: Sendable, Codable {
        public var ino: UInt64
        /// Under the mountpoint that was asked.
        public var path: String
        public var format: String
        public var chainDepth: Int?
        /// The image below it, when it is a differencing disk.
        public var parent: String?
        /// Why the image or its chain cannot be read, when it cannot.
        public var error: String?
        /// One node writing it ("exclusive"), or the nodes reading it ("shared"); none while nobody uses it.
        public var owners: [ClusterControl.DiskOwner]
    }

    public var volume: String
    public var label: String
    public var lun: String
    public var coordinator: Coordinator?
    public var nodes: [Node]
    /// Why the nodes' open files and file locks are missing, when they are.
    public var openFilesUnknown: String?
    /// The failure-detection settings of the node whose mount was asked.
    public var failureDetection: FailureDetection?
    /// The open files that are VM disks (VHD or VHDX); nil when no mount on this host could be asked.
    public var disks: [OpenDisk]?

    /// `etcd`: the volume's nodes coordinate through etcd there, not through the LUN. The open files are
    /// asked through `mountpoint`, a mount of the volume on this host.
    public static func gather(lun: String, etcd: String? = nil, mountpoint: String? = nil) async throws -> ClusterStatus {
        let device = try LUNDevice.open(lun, readOnly: true)
        defer { device.close() }
        let (superblock, _) = try device.superblock()
        let region = LocalCoordination.Region(offset: superblock.coordinationOffset, length: superblock.coordinationLength)
        let leader: Leadership?, members: Set<UInt32>
        if let etcd {
            let observer = try EtcdCoordination(endpoint: etcd, volume: ClusterNode.volumeID(superblock), node: LocalCoordination.maxNodes)
            (leader, members) = (try await observer.leader(), try await observer.members())
        } else {
            (leader, members) = try await LocalCoordination.observe(path: lun, region: region)
        }
        let records = NodeRecord.all(on: device, superblock: superblock)
        var openFiles: [OpenFile]?, fileLocks: [ClusterControl.HeldFileLock]?, openFilesUnknown: String?
        var failureDetection: FailureDetection?, disks: [OpenDisk]?
        if let mountpoint {
            do {
                openFiles = try ClusterControl.openFiles(through: mountpoint)
                fileLocks = try ClusterControl.fileLocks(through: mountpoint)
                failureDetection = try ClusterControl.failureDetection(through: mountpoint)
                disks = openDisks(openFiles ?? [], owners: try ClusterControl.diskOwners(through: mountpoint), under: mountpoint)
            } catch {
                openFilesUnknown = "\(error)"
            }
        } else {
            openFilesUnknown = "no mount of this volume on this host to ask"
        }
        let nodes = members.union(records.keys).sorted().map { id in
            let record = records[id]
            return Node(id: id, alive: members.contains(id), host: record?.host, address: record?.address,
                        mountpoint: record?.mountpoint, pid: record?.pid, joinedAt: record?.joinedAt,
                        openFiles: openFiles?.filter { $0.node == id }, fileLocks: fileLocks?.filter { $0.node == id })
        }
        return ClusterStatus(volume: ClusterNode.volumeID(superblock), label: superblock.label, lun: lun,
                             coordinator: leader.map { Coordinator(node: $0.node, address: $0.address, epoch: $0.epoch) },
                             nodes: nodes, openFilesUnknown: openFilesUnknown, failureDetection: failureDetection, disks: disks)
    }

    /// The open files whose `user.vhd.*` attributes say they are images, read through the mount.
    static func openDisks(_ files: [OpenFile], owners: [ClusterControl.DiskOwner], under mountpoint: String) -> [OpenDisk] {
        var seen = Set<UInt64>()
        return files.compactMap { file -> OpenDisk? in
            guard seen.insert(file.ino).inserted, let path = file.path.map({ mountpoint + $0 }),
                  let format = attribute("user.vhd.format", of: path) else { return nil }
            return OpenDisk(ino: file.ino, path: path, format: format,
                            chainDepth: attribute("user.vhd.chain_depth", of: path).flatMap { Int($0) },
                            parent: attribute("user.vhd.parent", of: path), error: attribute("user.vhd.error", of: path),
                            owners: owners.filter { $0.ino == file.ino })
        }.sorted { $0.path < $1.path }
    }

    private static func attribute(_ name: String, of path: String) -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = csvfs_getxattr(path, name, &buffer, buffer.count)
        return count >= 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
    }
}
