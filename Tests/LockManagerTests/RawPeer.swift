@testable import ClusterTransport
import Foundation
import NIOCore
@testable import LockManager

/// A raw TCP peer with a blocking socket and a receive timeout, to speak bad protocol on purpose:
/// it frames lock messages on the cluster transport by hand (tagged once it has authenticated).
final class RawPeer {
    /// What the peer received: the server's hello, a refusal (then the connection closes), or a
    /// lock message.
    enum Inbound: Equatable {
        case hello
        case refused(String)
        case lock(WireMessage)
    }

    private(set) var fd: Int32
    var inbox = ByteBuffer()
    private var serverNonce: [UInt8]?
    private var serverIdentity: PeerIdentity?
    private var inbound: FrameProtection?
    private var outbound: FrameProtection?

    /// `source` is the local address to connect from (any of 127.0.0.0/8), so a test can be
    /// several peers as the master counts them, per address.
    init(port: Int, source: String = "127.0.0.1", receiveTimeout: Int = 5) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { throw ModelFailure("bind to \(source) failed: \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw ModelFailure("connect failed: \(errno)") }
    }
    deinit { close() }
    /// True while the peer has not closed the connection (nothing is read).
    var isOpen: Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    }
    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// A lock message in a one-way frame of the lock service.
    func send(_ m: WireMessage) throws { sendFrame(try m.encoded()) }

    /// Any payload in a frame of `service` (tagged once authenticated).
    func sendFrame(_ payload: ByteBuffer, service: ServiceID = .lockManager, kind: FrameKind = .oneWay) {
        sendRaw(frameBytes(payload, service: service, kind: kind))
    }

    /// The bytes of a frame, counted as sent (its sequence number is used up).
    func frameBytes(_ payload: ByteBuffer, service: ServiceID = .lockManager, kind: FrameKind = .oneWay) -> [UInt8] {
        var b = ByteBuffer()
        try! Frame(service: service, kind: kind, payload: payload).encode(into: &b, protection: &outbound)
        return Array(b.readableBytesView)
    }

    func sendRaw(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { p in
            var sent = 0
            while sent < p.count {
                let n = Glibc.send(fd, p.baseAddress! + sent, p.count - sent, Int32(MSG_NOSIGNAL))
                if n <= 0 { return }
                sent += n
            }
        }
    }

    /// The next frame, or nil at EOF, timeout or a frame that does not decode.
    private func receiveFrame() -> Frame? {
        while true {
            do {
                if let f = try Frame.next(from: &inbox, maxFrame: Transport.maxFrame, protection: &inbound) { return f }
            } catch {
                return nil
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            inbox.writeBytes(chunk[0..<n])
        }
    }

    /// Next message, or nil at EOF / timeout.
    func receive() -> Inbound? {
        guard let f = receiveFrame() else { return nil }
        if f.kind == .control {
            switch try? ControlMessage.decode(f.payload) {
            case let .hello(server, nonce)?:
                serverNonce = nonce
                serverIdentity = server
                return .hello
            case .refusal(let r)?: return .refused(r.text)
            default: return nil
            }
        }
        return (try? WireMessage.decode(f.payload)).map { .lock($0) }
    }

    /// The transport handshake as a node would do it, then the master's welcome; returns its epoch.
    func authenticate(node: UInt32, secret: ClusterSecret, volume: String = "") throws -> Epoch {
        if serverNonce == nil { guard receive() == .hello else { throw ModelFailure("no hello") } }
        let me = PeerIdentity(node: node, volume: volume)
        let nonces = Nonces(server: serverNonce!, client: ClusterSecret.nonce())
        sendFrame(try ControlMessage.auth(client: me, nonce: nonces.client,
                                          proof: secret.clientProof(nonces, client: me, server: serverIdentity!)).encode(),
                  service: .control, kind: .control)
        guard let f = receiveFrame(), case .welcome(let proof)? = try? ControlMessage.decode(f.payload),
              proof == secret.serverProof(nonces, client: me, server: serverIdentity!) else { throw ModelFailure("no welcome") }
        let keys = secret.sessionKeys(nonces, client: me, server: serverIdentity!)
        inbound = FrameProtection(key: keys.serverToClient)
        outbound = FrameProtection(key: keys.clientToServer)
        guard case .lock(.welcome(let epoch, _))? = receive() else { throw ModelFailure("no lock welcome") }
        return epoch
    }
}
