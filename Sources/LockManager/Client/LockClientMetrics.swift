import Metrics

/// The lock client as the admin sees it, for swift-metrics: how long lock requests wait for their grant, and
/// how often the master asks this node to give a lock up.
struct LockClientMetrics: Sendable {
    let lockWait = Metrics.Timer(label: "csvfs_dlm_lock_wait_seconds", preferredDisplayUnit: .seconds)
    let blockingCallbacks = Counter(label: "csvfs_dlm_blocking_callbacks_total")
}
