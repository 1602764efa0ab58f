import Logging

/// Logs each kind of refusal once per peer address (a flood of refusals is not a flood of log
/// lines), and keeps the latest ones for whoever asks (tests, status). Bounded.
public struct RefusalLog {
    private var logged: Set<String> = []
    public private(set) var recent: [String] = []
    private let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    public mutating func note(kind: String, address: String, _ why: String) {
        if recent.count >= 64 { recent.removeFirst() }
        recent.append("\(address) (\(kind)): \(why)")
        if logged.count >= 4096 { logged.removeAll() }
        guard logged.insert("\(kind) \(address)").inserted else { return }
        logger.warning("refused \(address) (\(kind)): \(why); further refusals of this kind to this address are not logged")
    }
}
