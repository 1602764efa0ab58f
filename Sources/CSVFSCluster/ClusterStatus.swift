import CSVFS
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

    public var volume: String
    public var label: String
    public var lun: String
    public var coordinator: Coordinator?
    public var nodes: [Node]
    /// Why the nodes' open files and file locks are missing, when they are.
    public var openFilesUnknown: String?
    /// The failure-detection settings of the node whose mount was asked.
    public var failureDetection: FailureDetection?

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
        var failureDetection: FailureDetection?
        if let mountpoint {
            do {
                openFiles = try ClusterControl.openFiles(through: mountpoint)
                fileLocks = try ClusterControl.fileLocks(through: mountpoint)
                failureDetection = try ClusterControl.failureDetection(through: mountpoint)
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
                             nodes: nodes, openFilesUnknown: openFilesUnknown, failureDetection: failureDetection)
    }
}
