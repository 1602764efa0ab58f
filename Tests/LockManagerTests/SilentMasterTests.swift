import ClusterTransport
import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import LockManager
import TestSupport

/// A "master" that authenticates properly, welcomes, and then never answers: the client's own
/// deadline must end the caller's wait with a clear error instead of a hang.
final class SilentMasterService: TransportService {
    func opened(_ connection: TransportConnection) {
        connection.send(WireMessage.welcome(epoch: 1, recovering: false))
    }
    func received(_ message: InboundMessage, on connection: TransportConnection) {}   // swallow the rest
    func closed(_ connection: TransportConnection, reason: TransportError?) {}
}

@Suite struct SilentMasterTests {
    @Test(.timeLimit(.minutes(1))) func requestsToASilentMasterTimeOutOnTheClient() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let secret = ClusterSecret("quiet")
        let server = try await TransportServer(host: "127.0.0.1", port: 0, loop: group.next(), secret: secret,
                                               identity: PeerIdentity(node: 1, volume: "")) {
            [.lockManager: SilentMasterService()]
        }
        let dir = try makeTemporaryDirectory("dlm-silent")
        let file = dir.appendingPathComponent("lun").path
        // The silent server is published as the leader's address.
        let fakeLeader = try LocalCoordination(path: file, region: .ownFile, node: 1)
        try await fakeLeader.start(address: "127.0.0.1:\(server.port)")
        try await eventually("the fake leader") { fakeLeader.ownLeadership() != nil }
        let client = LockClient(coordination: try LocalCoordination(path: file, region: .ownFile, node: 2), secret: secret, group: group)
        client.start()
        let started = monotonicNow()
        await #expect(throws: LockError.timedOut) { try await client.lock("x", mode: .ex, timeout: .milliseconds(100)) }
        // It waited for the request's timeout plus the grace, not forever.
        #expect(monotonicNow() - started >= 2_000_000_000)
        await client.stop()
        await fakeLeader.stop()
        await server.stop()
        try await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: dir)
    }
}
