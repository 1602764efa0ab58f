import NIOCore

/// A service on the transport (the DLM, the metadata RPC): it is given the one-way messages and
/// requests of its `ServiceID` on a connection. Replies to its own requests never reach it: the
/// connection correlates them. Every call is made on the connection's event loop, in order.
public protocol TransportService: AnyObject {
    /// The handshake completed: the peer proved the secret and its identity is known.
    func opened(_ connection: TransportConnection)
    func received(_ message: InboundMessage, on connection: TransportConnection)
    /// The end of one read burst (a place to flush replies written meanwhile).
    func readComplete(_ connection: TransportConnection)
    /// The connection closed; `reason` is what ended it, if anything did but a plain close.
    func closed(_ connection: TransportConnection, reason: TransportError?)
}

extension TransportService {
    public func readComplete(_ connection: TransportConnection) {}
}

/// A one-way message or a request, as a service receives it.
public struct InboundMessage: Sendable {
    public var service: ServiceID
    public var payload: ByteBuffer
    /// The request id to answer with `TransportConnection.respond`, nil for a one-way message.
    public var requestID: UInt64?
    /// The requester's timeout: an answer after it is dropped there (nil: none).
    public var timeoutMillis: UInt32?
}

/// Makes the services of one connection, on its event loop, when it is set up.
public typealias ServiceFactory = @Sendable () -> [ServiceID: any TransportService]
