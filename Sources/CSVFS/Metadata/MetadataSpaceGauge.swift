/// When to measure the metadata space left, and whether an operation that grows the metadata may go on.
///
/// Operations that grow the metadata stop (ENOSPC) while the database and the log together come near the
/// database's capacity. SQLite meeting a full region mid-commit may roll back more than the failing
/// statement, so it must never get there; deletions, which free space, still go through.
///
/// Measuring costs two statements, so while plenty is left it is measured every `checkInterval` operations
/// only: that many operations cannot grow the database by `plentyOfSpace`.
struct MetadataSpaceGauge {
    private var lastSpaceLeft: Int64 = 0
    private var operationsSinceCheck = 0
    static let checkInterval = 32
    static let plentyOfSpace: Int64 = 16 << 20

    /// Throws ENOSPC when `measure` (what the database may still grow by) says nothing is left.
    mutating func require(measure: () throws(Errno) -> Int64) throws(Errno) {
        if lastSpaceLeft > Self.plentyOfSpace && operationsSinceCheck < Self.checkInterval {
            operationsSinceCheck += 1
            return
        }
        lastSpaceLeft = try measure()
        operationsSinceCheck = 0
        if lastSpaceLeft <= 0 { throw Errno.noSpace }
    }
}
