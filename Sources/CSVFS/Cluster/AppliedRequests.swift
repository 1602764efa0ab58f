/// The request of another node being served on this thread, when it must take effect once
/// (`MetadataCallKind.takesEffectOnce`): the store records it in the transaction of its change.
public enum ServedRequest {
    @TaskLocal public static var current: MetadataRequestID?
}

/// Whether the change a request asked for was committed: a coordinator that has it recorded answers the
/// request again instead of running it twice (its first answer was lost with the coordinator before).
public protocol AppliedRequests: Sendable {
    func wasApplied(_ id: MetadataRequestID) throws(Errno) -> Bool
}
