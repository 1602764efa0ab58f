/// The cluster transport: one TCP connection between two nodes of a volume, shared by the DLM and
/// the metadata RPC (each a `ServiceID`), below both: it knows nothing of locks or metadata.
///
/// It owns framing (`Frame`, `FrameCodec`), the authenticated handshake (`Handshake`), the
/// protection of every frame after it, request ids with request/response correlation, one-way
/// messages, deadlines (`TransportConnection`), and what any peer may cost a server
/// (`ConnectionLimits`, enforced by `TransportServer`).
///
/// ## Why a MAC on every frame, not TLS
///
/// After the handshake every frame carries HMAC-SHA256 over a per-direction sequence number and the
/// whole frame, keyed per connection and direction with HKDF-SHA256 from the cluster secret, both
/// nonces, the node id and the volume id. An injected, altered, replayed, reordered or dropped frame
/// fails its MAC (the sequence number is implicit: both ends count), and the connection closes.
/// We chose this over TLS with a pre-shared key (swift-nio-ssl) because:
/// - build cost: swift-crypto is already built for the handshake; swift-nio-ssl compiles BoringSSL
///   a second time (minutes on two cores, on every clean CI run), and its PSK support is TLS 1.2
///   only (no TLS 1.3 external PSK through its API);
/// - latency: a DLM round trip is ~40 us on loopback; the MAC costs a few microseconds per frame
///   (measured by `dlmtool bench` before/after and `TransportTests`), no extra round trip after the
///   handshake, no record layer or extra copies;
/// - confidentiality: the transport carries lock names and metadata (file names, attributes,
///   extents), never file data (every node does its data I/O on the LUN itself), and whoever is on
///   the cluster network usually can read the LUN too. Integrity and authentication are what stop
///   a peer on the path from taking locks or changing metadata; secrecy of names is not a goal.
///   Should it become one, an AEAD (ChaCha20-Poly1305 from the same swift-crypto, same keys, the
///   sequence number as nonce) replaces the MAC without changing the frame layout.
public enum Transport {
    /// The frame format's version (byte 4 of every frame).
    public static let version: UInt8 = 1
    /// The largest frame after authentication: room for a big `readdirplus` reply.
    public static let maxFrame = 16 << 20
    /// The largest frame a peer may send before it has authenticated (an `auth` is about 100
    /// bytes): all an unauthenticated connection can make a server buffer.
    public static let maxFrameBeforeAuth = 256
    /// Longest volume id, in bytes.
    public static let maxVolumeID = 64
}

/// A service multiplexed on a connection: the DLM, the metadata RPC, ... (0 is the transport's own).
public struct ServiceID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    static let control = ServiceID(rawValue: 0)
    public static let lockManager = ServiceID(rawValue: 1)
    public static let metadata = ServiceID(rawValue: 2)
    public var description: String { "service \(rawValue)" }
}

/// Who a node is, as it proves in the handshake: its id and the volume it serves (a node of
/// another volume is refused even with the right secret).
public struct PeerIdentity: Hashable, Sendable, CustomStringConvertible {
    public var node: UInt32
    public var volume: String
    public init(node: UInt32, volume: String) {
        self.node = node
        self.volume = volume
    }
    public var description: String { "node \(node) of volume \(volume.isEmpty ? "(none)" : volume)" }
}

public enum TransportError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer does not know the cluster secret (or refused ours).
    case authenticationFailed(String)
    /// The peer serves another volume.
    case wrongVolume(String)
    /// The peer closed the connection and said why (a limit, a protocol error, ...).
    case refused(String)
    /// A request's deadline passed before its reply came.
    case timedOut
    /// The connection closed.
    case closed
    /// A frame that breaks the format (or fails its MAC).
    case malformed(String)
    /// The other side's service answered a request with an error.
    case remote(String)
    /// A message that cannot be sent within the format's limits.
    case tooLarge(String)

    public var description: String {
        switch self {
        case .authenticationFailed(let s): "authentication failed: \(s)"
        case .wrongVolume(let s): "wrong volume: \(s)"
        case .refused(let s): "refused by the peer: \(s)"
        case .timedOut: "the request's deadline passed"
        case .closed: "the connection closed"
        case .malformed(let s): s
        case .remote(let s): "the peer's service failed: \(s)"
        case .tooLarge(let s): s
        }
    }
}
