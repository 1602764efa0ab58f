import Foundation
import NIOPosix
@testable import LockManager
import TestSupport

/// A master on loopback with the local backend, for in-process tests.
struct MasterFixture {
    let dir: URL
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let secret = ClusterSecret("s3cret")
    let nodes: [DLMNode]
    init(count: Int, limits: MasterLimits = MasterLimits()) async throws {
        dir = try makeTemporaryDirectory("dlm-wire")
        let file = dir.appendingPathComponent("lun").path
        var ns: [DLMNode] = []
        for id in 1...UInt32(count) {
            let n = DLMNode(coordination: try LocalCoordination(path: file, region: .ownFile, node: id), secret: secret,
                            port: try freeLoopbackPort(), group: group, limits: limits)
            try await n.start()
            // Node 1 leads: start the others once it hosts the master.
            if id == 1 { try await eventually("node 1 to lead") { n.isMaster } }
            ns.append(n)
        }
        nodes = ns
        for n in ns { _ = try await n.client.listing() }
        try await eventually("recovery to end") { try await ns[0].client.listing().contains("(recovering)") == false }
    }
    var masterPort: Int { Int(nodes[0].address.split(separator: ":")[1])! }
    /// Runs `body` with a fixture and always stops it, also when the body throws.
    static func with(count: Int, limits: MasterLimits = MasterLimits(), _ body: (MasterFixture) async throws -> Void) async throws {
        let f = try await MasterFixture(count: count, limits: limits)
        do { try await body(f) } catch { await f.stop(); throw error }
        await f.stop()
    }

    func stop() async {
        for n in nodes.reversed() { await n.stop() }
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: dir)
    }
}

