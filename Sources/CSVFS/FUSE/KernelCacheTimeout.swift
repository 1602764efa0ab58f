/// How long the kernel may cache the names and attributes this mount gives it, in seconds; changeable while
/// the mount serves. A node alone sees every change itself and lets the kernel cache for a second. While
/// other nodes have the volume mounted, it lets the kernel cache nothing, so every call sees another
/// node's change: a stopgap until caches are kept only under DLM locks (docs/cluster-plan.md).
public final class KernelCacheTimeout: Sendable {
    public static let alone = 1.0
    private let value: Locked<Double>

    public init(_ seconds: Double = KernelCacheTimeout.alone) { value = Locked(seconds) }

    public var seconds: Double {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
