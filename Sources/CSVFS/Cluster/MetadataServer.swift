/// The coordinator's side of the metadata RPC: decodes a request, runs it on the local service, encodes the
/// reply. A request that does not decode is refused (EPROTO) and never reaches the service.
public final class MetadataServer: Sendable {
    private let service: any MetadataService
    private let refusals = Locked<UInt64>(0)

    public init(service: any MetadataService) {
        self.service = service
    }

    /// `peer` is the node the transport authenticated: a request under another node's id is refused (EPERM),
    /// so no node can pass its calls off as another's.
    public func serve(_ request: [UInt8], from peer: UInt32? = nil) -> [UInt8] {
        let id: MetadataRequestID
        let call: MetadataCall
        do throws(Errno) {
            (id, call) = try MetadataWire.decodeRequest(request)
            if let peer, id.node != peer { throw .notPermitted }
        } catch {
            refusals.withLock { $0 += 1 }
            return MetadataWire.encodeRefusal(of: request, error)
        }
        let outcome = Result { () throws(Errno) -> MetadataResult in try call.perform(on: service, for: id.node) }
        return MetadataWire.encodeReply(id: id, kind: call.kind, outcome)
    }

    /// Requests refused as malformed so far.
    public var refusedCount: UInt64 { refusals.withLock { $0 } }
}
