/// The coordinator's side of the metadata RPC: decodes a request, runs it on the local service, encodes the
/// reply. A request that does not decode is refused (EPROTO) and never reaches the service.
public final class MetadataServer: Sendable {
    private let service: any MetadataService
    /// Where the requests that take effect once are recorded; without it they run each time they come.
    private let applied: (any AppliedRequests)?
    private let refusals = Locked<UInt64>(0)

    public init(service: any MetadataService, applied: (any AppliedRequests)? = nil) {
        self.service = service
        self.applied = applied
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
        let outcome = outcome(of: call, id)
        if case .success = outcome, call.kind.takesEffectOnce { FaultInjection.committed(call.kind, id) }
        return MetadataWire.encodeReply(id: id, kind: call.kind, outcome)
    }

    /// A request that takes effect once runs with its id recorded in its change's transaction; one sent again
    /// whose change is recorded (its answer was lost) is answered from what is there now.
    private func outcome(of call: MetadataCall, _ id: MetadataRequestID) -> Result<MetadataResult, Errno> {
        guard call.kind.takesEffectOnce, let applied else {
            return Result { () throws(Errno) -> MetadataResult in try call.perform(on: service, for: id.node) }
        }
        do throws(Errno) {
            if try applied.wasApplied(id) { return Result { () throws(Errno) in try call.answerAgain(on: service) } }
        } catch {
            return .failure(error)
        }
        var outcome: Result<MetadataResult, Errno> = .failure(.io)
        ServedRequest.$current.withValue(id) {
            outcome = Result { () throws(Errno) -> MetadataResult in try call.perform(on: service, for: id.node) }
        }
        return outcome
    }

    /// Requests refused as malformed so far.
    public var refusedCount: UInt64 { refusals.withLock { $0 } }
}
