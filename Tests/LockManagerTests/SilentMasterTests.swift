import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import LockManager
import TestSupport

/// A "master" that authenticates properly and then never answers: the client's own deadline
/// must end the caller's wait with a clear error instead of a hang.
final class SilentMasterHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = WireMessage
    typealias OutboundOut = WireMessage
    let secret: ClusterSecret
    let nonce = ClusterSecret.nonce()
    init(secret: ClusterSecret) { self.secret = secret }
    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.hello(nonce: nonce)), promise: nil)
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case let .auth(node, cn, _) = unwrapInboundIn(data) else { return }   // swallow the rest
        context.writeAndFlush(wrapOutboundOut(.welcome(epoch: 1, recovering: false,
                                                       mac: secret.serverProof(serverNonce: nonce, clientNonce: cn, node: node))),
                              promise: nil)
    }
}

@Suite struct SilentMasterTests {
    @Test(.timeLimit(.minutes(1))) func requestsToASilentMasterTimeOutOnTheClient() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let secret = ClusterSecret("quiet")
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(WireCodec())
                    try ch.pipeline.syncOperations.addHandler(SilentMasterHandler(secret: secret))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let dir = try makeTemporaryDirectory("dlm-silent")
        let file = dir.appendingPathComponent("lun").path
        // The silent server is published as the leader's address.
        let fakeLeader = try LocalCoordination(path: file, region: .ownFile, node: 1)
        try await fakeLeader.start(address: "127.0.0.1:\(server.localAddress!.port!)")
        try await eventually("the fake leader") { fakeLeader.ownLeadership() != nil }
        let client = LockClient(coordination: try LocalCoordination(path: file, region: .ownFile, node: 2), secret: secret, group: group)
        client.start()
        let started = monotonicNow()
        await #expect(throws: LockError.timedOut) { try await client.lock("x", mode: .ex, timeout: .milliseconds(100)) }
        // It waited for the request's timeout plus the grace, not forever.
        #expect(monotonicNow() - started >= 2_000_000_000)
        await client.stop()
        await fakeLeader.stop()
        try await server.close()
        try await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: dir)
    }
}
