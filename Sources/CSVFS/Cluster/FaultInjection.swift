import Glibc

/// A test's way to kill the coordinator at a chosen point of a request, as a power cut or SIGKILL there
/// would: with `CSVFS_FAULT_EXIT_AFTER_COMMIT=KIND` (a `MetadataCallKind` name) in its environment, the
/// coordinator exits right after it has committed the first request of that kind from another node, before
/// it answers. Unset (always, outside tests), it does nothing.
enum FaultInjection {
    static let exitAfterCommit: String? = getenv("CSVFS_FAULT_EXIT_AFTER_COMMIT").map { String(cString: $0) }

    static func committed(_ kind: MetadataCallKind, _ id: MetadataRequestID) {
        guard let exitAfterCommit, exitAfterCommit == "\(kind)" else { return }
        let line = "csvfs: fault injection: exiting after committing \(kind) \(id), before answering\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        _exit(70)
    }
}
