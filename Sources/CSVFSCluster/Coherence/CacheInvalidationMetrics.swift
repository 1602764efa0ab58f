import Metrics

/// What this node dropped because another node wanted an inode's lock (or it fenced itself), for swift-metrics: its own cached
/// entries (attributes, names, extent maps) and the kernel's attributes it told the kernel to drop.
struct CacheInvalidationMetrics: Sendable {
    private let node = Counter(label: "csvfs_cache_invalidations_total", dimensions: [("cache", "node")])
    private let kernel = Counter(label: "csvfs_cache_invalidations_total", dimensions: [("cache", "kernel")])

    func droppedNodeCache() { node.increment() }
    func droppedKernelAttributes(count: Int = 1) { kernel.increment(by: Int64(count)) }
}
