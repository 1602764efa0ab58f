import ClusterTransport
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What the test server's services do with a request, by its first byte.
enum Command: UInt8 {
    /// Answer with the rest of the payload.
    case echo = 1
    /// Answer with `u32` bytes of a counting pattern.
    case big = 2
    /// Answer with the rest after `u32` milliseconds.
    case slow = 3
}

/// A service that answers requests as `Command` says, and counts one-way messages.
final class EchoService: TransportService {
    let tag: UInt8
    let oneWay: NIOLockedValueBox<[ByteBuffer]>
    init(tag: UInt8, oneWay: NIOLockedValueBox<[ByteBuffer]>) {
        self.tag = tag
        self.oneWay = oneWay
    }
    func opened(_ connection: TransportConnection) {}
    func closed(_ connection: TransportConnection, reason: TransportError?) {}
    func received(_ message: InboundMessage, on connection: TransportConnection) {
        var p = message.payload
        guard message.requestID != nil else { return oneWay.withLockedValue { $0.append(p) } }
        guard let raw: UInt8 = p.readInteger(), let command = Command(rawValue: raw) else {
            return connection.fail(message, "unknown command")
        }
        switch command {
        case .echo:
            var out = ByteBuffer(bytes: [tag])
            out.writeBuffer(&p)
            connection.respond(to: message, with: out)
        case .big:
            let n = Int(p.readInteger(as: UInt32.self) ?? 0)
            connection.respond(to: message, with: ByteBuffer(bytes: pattern(n)))
        case .slow:
            let millis = Int64(p.readInteger(as: UInt32.self) ?? 0)
            let rest = p
            connection.eventLoop.scheduleTask(in: .milliseconds(millis)) {
                connection.respond(to: message, with: rest)
            }
        }
    }
}

/// `n` bytes of a pattern whose every byte depends on its offset.
func pattern(_ n: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: n) { buffer, count in
        for i in 0..<n { buffer[i] = UInt8(truncatingIfNeeded: i &* 7 &+ i >> 8) }
        count = n
    }
}

/// A server with two echo services (tags 1 and 2) on loopback, and clients for it.
struct EchoServer {
    static let serviceA = ServiceID(rawValue: 10)
    static let serviceB = ServiceID(rawValue: 11)
    let group: MultiThreadedEventLoopGroup
    let server: TransportServer
    let secret: ClusterSecret
    let identity = PeerIdentity(node: 1, volume: "vol-A")
    let oneWay = NIOLockedValueBox<[ByteBuffer]>([])

    init(secret: ClusterSecret = ClusterSecret("right"), limits: ConnectionLimits = ConnectionLimits()) async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        self.secret = secret
        let oneWay = self.oneWay
        server = try await TransportServer(host: "127.0.0.1", port: 0, loop: group.next(), secret: secret,
                                           identity: identity, limits: limits) {
            [Self.serviceA: EchoService(tag: 1, oneWay: oneWay), Self.serviceB: EchoService(tag: 2, oneWay: oneWay)]
        }
    }

    func connect(port: Int? = nil, secret: ClusterSecret? = nil, node: UInt32 = 2, volume: String = "vol-A") async throws -> TransportConnection {
        try await TransportClient.connect(host: "127.0.0.1", port: port ?? server.port, loop: group.next(),
                                          secret: secret ?? self.secret, identity: PeerIdentity(node: node, volume: volume)) { [:] }
    }

    func stop() async {
        await server.stop()
        try? await group.shutdownGracefully()
    }

    static func with(_ body: (EchoServer) async throws -> Void) async throws {
        let s = try await EchoServer()
        do { try await body(s) } catch { await s.stop(); throw error }
        await s.stop()
    }
}

func request(_ c: TransportConnection, _ command: Command, _ bytes: [UInt8] = [], u32: UInt32? = nil,
             service: ServiceID = EchoServer.serviceA, timeout: Duration = .seconds(10)) async throws -> ByteBuffer {
    var b = ByteBuffer(bytes: [command.rawValue])
    if let u32 { b.writeInteger(u32) }
    b.writeBytes(bytes)
    return try await c.request(service, b, timeout: timeout)
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
