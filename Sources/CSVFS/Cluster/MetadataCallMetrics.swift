import Metrics

/// The metadata RPCs of this node for swift-metrics (exported for Prometheus with `-o metrics=HOST:PORT`):
/// calls by kind, their latency, and failures (no reply, or one that does not decode). Made once per
/// service, so a call costs a dictionary lookup, not a factory lookup.
struct MetadataCallMetrics: Sendable {
    private let calls: [MetadataCallKind: Counter]
    private let latency: [MetadataCallKind: Metrics.Timer]
    private let failures: Counter

    init() {
        var calls: [MetadataCallKind: Counter] = [:]
        var latency: [MetadataCallKind: Metrics.Timer] = [:]
        for kind in MetadataCallKind.allCases {
            calls[kind] = Counter(label: "csvfs_metadata_rpcs_total", dimensions: [("kind", "\(kind)")])
            latency[kind] = Metrics.Timer(label: "csvfs_metadata_rpc_duration_seconds", dimensions: [("kind", "\(kind)")],
                                          preferredDisplayUnit: .seconds)
        }
        self.calls = calls
        self.latency = latency
        failures = Counter(label: "csvfs_metadata_rpc_failures_total")
    }

    func record(_ kind: MetadataCallKind, nanoseconds: Int64, failed: Bool) {
        calls[kind]?.increment()
        latency[kind]?.recordNanoseconds(nanoseconds)
        if failed { failures.increment() }
    }
}
