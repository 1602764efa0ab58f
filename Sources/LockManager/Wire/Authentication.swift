import Crypto
import Foundation

/// Challenge-response with the cluster secret (HMAC-SHA256), both ways: the master proves it knows
/// the secret too, so a node never takes a lock from an impostor.
public struct ClusterSecret: Sendable {
    // Kept as bytes (SymmetricKey is not Sendable); a key is made per MAC, which is cheap.
    let secret: [UInt8]
    public init(_ secret: String) { self.secret = Array(secret.utf8) }

    static func nonce() -> [UInt8] { (0..<32).map { _ in UInt8.random(in: 0...255) } }

    func clientProof(serverNonce: [UInt8], clientNonce: [UInt8], node: UInt32) -> [UInt8] {
        mac("client", serverNonce, clientNonce, node)
    }
    func serverProof(serverNonce: [UInt8], clientNonce: [UInt8], node: UInt32) -> [UInt8] {
        mac("server", serverNonce, clientNonce, node)
    }
    private func mac(_ role: String, _ a: [UInt8], _ b: [UInt8], _ node: UInt32) -> [UInt8] {
        var data = Data(role.utf8)
        data.append(contentsOf: a)
        data.append(contentsOf: b)
        withUnsafeBytes(of: node.bigEndian) { data.append(contentsOf: $0) }
        return Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: secret)))
    }
    /// Constant-time comparison, so timing does not leak the expected MAC.
    static func equal(_ x: [UInt8], _ y: [UInt8]) -> Bool {
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
