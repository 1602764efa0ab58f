import Metrics

/// File data this node moved to and from the LUN, for swift-metrics: bytes and I/Os by direction.
struct LUNIOMetrics: Sendable {
    private let readBytes = Counter(label: "csvfs_lun_bytes_total", dimensions: [("direction", "read")])
    private let writeBytes = Counter(label: "csvfs_lun_bytes_total", dimensions: [("direction", "write")])
    private let reads = Counter(label: "csvfs_lun_ios_total", dimensions: [("direction", "read")])
    private let writes = Counter(label: "csvfs_lun_ios_total", dimensions: [("direction", "write")])

    func record(_ transfers: [LUNTransfer]) {
        var bytes = (read: 0, write: 0), count = (read: 0, write: 0)
        for transfer in transfers {
            switch transfer.direction {
            case .read: bytes.read += transfer.count; count.read += 1
            case .write: bytes.write += transfer.count; count.write += 1
            }
        }
        if count.read > 0 { readBytes.increment(by: bytes.read); reads.increment(by: count.read) }
        if count.write > 0 { writeBytes.increment(by: bytes.write); writes.increment(by: count.write) }
    }
}
