import HeapModule

/// Deadlines of queued requests, earliest first, so that neither `tick` nor the shell's
/// "when next?" look at every lock.
///
/// Entries are never removed in place: a request that ends before its deadline leaves a stale
/// entry, recognised by the table (the lock no longer waits under that sequence number) and
/// dropped when it surfaces. `needsCompaction` tells the table when stale entries outnumber the
/// live ones, so the heap stays proportional to the queued requests.
struct DeadlineQueue: Sendable {
    struct Entry: Comparable, Sendable {
        var deadline: Instant
        var sequence: UInt64
        var id: LockID
        static func < (a: Entry, b: Entry) -> Bool { (a.deadline, a.sequence) < (b.deadline, b.sequence) }
    }

    private var heap = Heap<Entry>()

    var count: Int { heap.count }
    var earliest: Entry? { heap.min }

    mutating func insert(_ e: Entry) { heap.insert(e) }
    mutating func removeEarliest() -> Entry? { heap.popMin() }
    mutating func removeAll() { heap = Heap() }
    mutating func replace(with entries: [Entry]) { heap = Heap(entries) }

    func needsCompaction(live: Int) -> Bool { heap.count > 2 * live + 64 }
}
