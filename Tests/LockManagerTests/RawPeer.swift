import Foundation
import NIOCore
@testable import LockManager

/// A raw TCP peer with a blocking socket and a receive timeout, to speak bad protocol on purpose.
final class RawPeer {
    private(set) var fd: Int32
    var inbox = ByteBuffer()
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
    func send(_ m: WireMessage) throws { var b = ByteBuffer(); try m.encode(into: &b); sendRaw(Array(b.readableBytesView)) }
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
    /// Next message, or nil at EOF / timeout.
    func receive() -> WireMessage? {
        while true {
            if let len: UInt32 = inbox.getInteger(at: inbox.readerIndex), inbox.readableBytes >= 4 + Int(len) {
                inbox.moveReaderIndex(forwardBy: 4)
                var body = inbox.readSlice(length: Int(len))!
                return try? WireMessage.decode(&body)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            inbox.writeBytes(chunk[0..<n])
        }
    }
    func authenticate(node: UInt32, secret: ClusterSecret) throws -> Epoch {
        guard case .hello(let nonce)? = receive() else { throw ModelFailure("no hello") }
        let cn = ClusterSecret.nonce()
        try send(.auth(node: node, clientNonce: cn, mac: secret.clientProof(serverNonce: nonce, clientNonce: cn, node: node)))
        guard case let .welcome(epoch, _, _)? = receive() else { throw ModelFailure("no welcome") }
        return epoch
    }
}

