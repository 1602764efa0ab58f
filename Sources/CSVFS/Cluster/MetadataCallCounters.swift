/// How many metadata RPCs a node sent, by kind, and their bytes: for the bench's "RPCs per operation" now
/// and for exported metrics later.
public struct MetadataCallCounts: Sendable, Equatable {
    /// Indexed by `MetadataCallKind.rawValue` (the codes run from 1 without gaps).
    private var calls = [UInt64](repeating: 0, count: MetadataCallKind.allCases.count + 1)
    public private(set) var bytesSent: UInt64 = 0
    public private(set) var bytesReceived: UInt64 = 0
    /// Calls that got no decodable reply (timeouts, channel failures, malformed replies).
    public private(set) var failures: UInt64 = 0

    public init() {}

    public subscript(kind: MetadataCallKind) -> UInt64 { calls[Int(kind.rawValue)] }

    public var total: UInt64 { calls.reduce(0, +) }

    /// RPCs per operation over `operations` operations (a bench takes the counts before and after a run).
    public func perOperation(_ operations: Int) -> Double {
        operations > 0 ? Double(total) / Double(operations) : 0
    }

    /// What was counted after `earlier`.
    public func since(_ earlier: MetadataCallCounts) -> MetadataCallCounts {
        var difference = self
        for index in calls.indices { difference.calls[index] -= earlier.calls[index] }
        difference.bytesSent -= earlier.bytesSent
        difference.bytesReceived -= earlier.bytesReceived
        difference.failures -= earlier.failures
        return difference
    }

    mutating func record(_ kind: MetadataCallKind, sent: Int, received: Int, failed: Bool) {
        calls[Int(kind.rawValue)] += 1
        bytesSent += UInt64(sent)
        bytesReceived += UInt64(received)
        if failed { failures += 1 }
    }
}

extension MetadataCallCounts: CustomStringConvertible {
    /// "N calls (kind n, ...), S bytes sent, R bytes received, F failed", kinds with no calls left out.
    public var description: String {
        let kinds = MetadataCallKind.allCases.filter { self[$0] > 0 }.map { "\($0) \(self[$0])" }
        return "\(total) calls (\(kinds.joined(separator: ", "))), \(bytesSent) bytes sent, "
            + "\(bytesReceived) bytes received, \(failures) failed"
    }
}
