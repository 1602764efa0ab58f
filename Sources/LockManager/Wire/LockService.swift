import ClusterTransport
import NIOCore

extension TransportConnection {
    /// Sends a lock message as a one-way frame of the lock manager's service. A message that
    /// cannot be encoded (a caller checks the limits first, so this is a defect) closes the
    /// connection with the reason rather than vanishing.
    func send(_ message: WireMessage, flush: Bool = true) {
        do {
            send(.lockManager, try message.encoded(), flush: flush)
        } catch {
            close(Refusal(.protocolError, "cannot encode a lock message: \(error)"))
        }
    }
}
