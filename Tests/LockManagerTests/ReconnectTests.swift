import ClusterTransport
import Foundation
import NIOPosix
import Testing
@testable import LockManager
import TestSupport

/// A real backend whose leader address is replaced by a proxy's, so a test can cut one node's
/// connection to the master without touching the master.
struct ProxiedCoordination: CoordinationBackend {
    let inner: any CoordinationBackend
    let proxyAddress: String
    var node: UInt32 { inner.node }
    func start(address: String) async throws { try await inner.start(address: address) }
    func leader() async throws -> Leadership? {
        guard var l = try await inner.leader() else { return nil }
        l.address = proxyAddress
        return l
    }
    func ownLeadership() -> Leadership? { inner.ownLeadership() }
    func members() async throws -> Set<UInt32> { try await inner.members() }
    func isFenced() -> Bool { inner.isFenced() }
    func events() -> AsyncStream<CoordinationEvent> { inner.events() }
    func stop() async { await inner.stop() }
}

@Suite(.serialized) struct ReconnectTests {
    /// After a dropped connection under the same master, the node resyncs: it keeps the locks it
    /// holds, its queued request is queued once again, and it is served when its turn comes.
    @Test(.timeLimit(.minutes(1))) func aDroppedConnectionResyncsWithoutLosingOrDuplicatingLocks() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let dir = try makeTemporaryDirectory("dlm-reconnect")
        let file = dir.appendingPathComponent("lun").path
        let secret = ClusterSecret("blip")
        let one = DLMNode(coordination: try LocalCoordination(path: file, region: .ownFile, node: 1), secret: secret,
                          port: try freeLoopbackPort(), group: group)
        try await one.start()
        try await eventually("node 1 to lead") { one.isMaster }
        let proxy = try await TCPProxy(target: "http://\(one.address)")
        let twoCoordination = ProxiedCoordination(inner: try LocalCoordination(path: file, region: .ownFile, node: 2),
                                                  proxyAddress: String(proxy.endpoint.dropFirst("http://".count)))
        let two = DLMNode(coordination: twoCoordination, secret: secret, port: try freeLoopbackPort(), group: group)
        try await two.start()
        let a = one.client, b = two.client
        let (held, _) = try await b.lock("a", mode: .ex, timeout: .seconds(5))
        let (blocker, _) = try await a.lock("b", mode: .ex, timeout: .seconds(5))
        let waiter = Task { try await b.lock("b", mode: .pr, timeout: .seconds(20)) }
        try await eventually("node 2 to wait on b") { try await a.listing().contains("waiting") }

        #expect(b.sessions == 1)
        await proxy.dropConnections()
        try await eventually("node 2 to reconnect") { b.sessions == 2 }
        // Node 2 reconnects; its lock on a survives, its request on b is queued exactly once.
        try await eventually("node 2 to resync") {
            let l = try await a.listing()
            return l.contains("owner 2.0 EX") && l.components(separatedBy: "waiting").count == 2
        }
        #expect(b.isHeld(held))
        await #expect(throws: LockError.wouldBlock) { try await a.lock("a", mode: .cr, flags: .noQueue) }
        try await a.unlock(blocker)
        let (got, _) = try await waiter.value
        #expect(b.mode(of: got) == .pr)
        await two.stop()
        await one.stop()
        await proxy.stop()
        try await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: dir)
    }
}
