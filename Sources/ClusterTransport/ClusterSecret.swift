import Crypto
import Foundation

/// The secret every node of a volume's cluster knows. The handshake proves it both ways
/// (HMAC-SHA256 challenge-response over both nonces and both identities) and derives from it the
/// keys that protect every later frame.
public struct ClusterSecret: Sendable {
    // Kept as bytes (SymmetricKey is made where it is used).
    let secret: [UInt8]
    public init(_ secret: String) { self.secret = Array(secret.utf8) }
    public init(bytes: [UInt8]) { secret = bytes }

    public static func nonce() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    /// What the connecting side proves: it knows the secret, for these nonces, as `client`
    /// connecting to `server` (the server's identity is in its hello).
    public func clientProof(_ nonces: Nonces, client: PeerIdentity, server: PeerIdentity) -> [UInt8] {
        mac("client", nonces, client, server)
    }
    public func serverProof(_ nonces: Nonces, client: PeerIdentity, server: PeerIdentity) -> [UInt8] {
        mac("server", nonces, client, server)
    }

    /// The two keys of one connection (client-to-server, server-to-client): HKDF-SHA256 of the secret,
    /// salted with both nonces, bound to both identities.
    func sessionKeys(_ nonces: Nonces, client: PeerIdentity, server: PeerIdentity) -> (clientToServer: SymmetricKey, serverToClient: SymmetricKey) {
        let salt = nonces.server + nonces.client
        func key(_ direction: String) -> SymmetricKey {
            let info = Self.transcript("csvfs transport v1 \(direction)", client, server)
            return HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: secret), salt: salt, info: info, outputByteCount: 32)
        }
        return (key("client->server"), key("server->client"))
    }

    private func mac(_ role: String, _ nonces: Nonces, _ client: PeerIdentity, _ server: PeerIdentity) -> [UInt8] {
        var data = Self.transcript(role, client, server)
        data.append(contentsOf: nonces.server)
        data.append(contentsOf: nonces.client)
        return Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: secret)))
    }

    /// Role, then each identity with explicit lengths, so no two different inputs read the same.
    private static func transcript(_ role: String, _ client: PeerIdentity, _ server: PeerIdentity) -> Data {
        var data = Data(role.utf8)
        for id in [client, server] {
            withUnsafeBytes(of: id.node.bigEndian) { data.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt16(id.volume.utf8.count).bigEndian) { data.append(contentsOf: $0) }
            data.append(contentsOf: id.volume.utf8)
        }
        return data
    }

    /// Constant-time comparison, so timing does not leak the expected MAC.
    public static func equal(_ x: [UInt8], _ y: [UInt8]) -> Bool {
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// The nonces of one handshake: the server's (in its hello) and the client's (in its auth).
public struct Nonces: Sendable {
    public var server: [UInt8]
    public var client: [UInt8]
    public init(server: [UInt8], client: [UInt8]) {
        self.server = server
        self.client = client
    }
}
