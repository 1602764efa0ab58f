/// `csvfs status --json`, as the tests read it (the fields they check).
struct StatusReport: Decodable {
    struct Coordinator: Decodable { var node: UInt32; var epoch: UInt64; var address: String }
    struct OpenFile: Decodable, Equatable { var node: UInt32; var handles: UInt32; var path: String? }
    struct FileLock: Decodable, Hashable {
        var node: UInt32; var path: String?; var kind: String; var mode: String; var start: Int64; var end: Int64?; var pid: UInt32
    }
    struct Node: Decodable {
        var id: UInt32; var alive: Bool; var mountpoint: String?; var pid: Int32?; var address: String?
        var openFiles: [OpenFile]?
        var fileLocks: [FileLock]?
    }
    var volume: String
    var openFilesUnknown: String?
    var coordinator: Coordinator?
    var nodes: [Node]
    struct FailureDetection: Decodable, Equatable { var leaseTTLSeconds: Int?; var ioTimeoutSeconds: Int }
    var failureDetection: FailureDetection?
    struct DiskOwner: Decodable, Equatable { var node: UInt32; var mode: String }
    struct OpenDisk: Decodable { var path: String; var format: String; var chainDepth: Int?; var parent: String?; var owners: [DiskOwner] }
    var disks: [OpenDisk]?
}
