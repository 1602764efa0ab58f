/// `csvfs status --json`, as the tests read it (the fields they check).
struct StatusReport: Decodable {
    struct Coordinator: Decodable { var node: UInt32; var epoch: UInt64; var address: String }
    struct Node: Decodable { var id: UInt32; var alive: Bool; var mountpoint: String?; var pid: Int32?; var address: String? }
    var volume: String
    var coordinator: Coordinator?
    var nodes: [Node]
}
