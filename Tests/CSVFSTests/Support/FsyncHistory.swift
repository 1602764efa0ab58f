import Foundation
import Glibc
import Testing

/// What a one-thread workload made durable, and when, in positions of the LUN write log (its size when a call
/// of the workload started or returned): what the volume must hold after a power cut at any position.
///
/// An operation starts (the log's size before its first call) and settles (the log's size once its last
/// fsync returned); from then on the paths it changed hold what it left. Operations run one after another,
/// so at a cut at most one is under way: its paths may hold what it found or what it leaves, as its kind
/// allows, and every other path what the settled operations left. Files written and never synced may hold
/// anything of what they were given, or zeros, but never bytes of another file.
struct FsyncHistory {
    /// A path's content: nil when absent.
    typealias Content = [UInt8]?

    enum Change {
        /// A new file being written: until its fsync returns it may be absent, or hold any of its bytes, the
        /// rest zeros (blocks allocated, their data not yet on the LUN), and never bytes of another file.
        case creating(path: String, content: [UInt8])
        /// All of `paths` change in one step (rename, unlink, truncate): a cut leaves all old or all new.
        case atomic([String: (old: Content, new: Content)])
        /// Bytes appended: the old bytes stay as they were, the file is no shorter, no longer than new, and each
        /// byte past the old ones is the new byte or zero.
        case growing(path: String, old: [UInt8], new: [UInt8])
        /// Bytes of `range` rewritten in place: the size and every byte outside the range stay as they were, and
        /// each byte inside it is the old byte or the new one.
        case rewriting(path: String, old: [UInt8], new: [UInt8], range: Range<Int>)

        var paths: [String] {
            switch self {
            case .creating(let path, _), .growing(let path, _, _), .rewriting(let path, _, _, _): return [path]
            case .atomic(let changes): return Array(changes.keys)
            }
        }

        var settled: [String: Content] {
            switch self {
            case .creating(let path, let content), .growing(let path, _, let content), .rewriting(let path, _, let content, _):
                return [path: content]
            case .atomic(let changes): return changes.mapValues(\.new)
            }
        }
    }

    struct Operation {
        let name: String
        let started: Int64
        let settled: Int64
        let change: Change
    }

    private(set) var operations: [Operation] = []
    /// What the settled operations left, as the workload goes on.
    private(set) var current: [String: Content] = [:]
    /// Files written and never synced (the workload touches them no more), and when their writing started.
    private(set) var unsynced: [(path: String, content: [UInt8], started: Int64)] = []

    mutating func append(_ operation: Operation) {
        operations.append(operation)
        current.merge(operation.change.settled) { $1 }
    }

    mutating func appendUnsynced(path: String, content: [UInt8], started: Int64) {
        unsynced.append((path, content, started))
    }

    /// Files present now, for the workload to pick from.
    var files: [String] { current.filter { $0.value != nil }.keys.sorted() }

    /// What a check of a cut image found.
    struct Verdict {
        var checked = 0
        /// Paths holding what no cut could leave.
        var failures: [String] = []
    }

    /// Checks the volume mounted at `mountpoint` against a power cut at log position `cut`.
    func verify(at cut: Int64, mountpoint: String) -> Verdict {
        var verdict = Verdict()
        var expected: [String: Content] = [:]
        var underWay: Operation?
        for operation in operations where operation.started < cut {
            if operation.settled <= cut {
                expected.merge(operation.change.settled) { $1 }
            } else {
                underWay = operation
            }
        }
        let changing = Set(underWay?.change.paths ?? [])
        for (path, content) in expected.sorted(by: { $0.key < $1.key }) where !changing.contains(path) {
            verdict.checked += 1
            let found = Self.content(mountpoint + "/" + path)
            if found != content {
                verdict.failures.append("\(path) holds \(Self.describe(found)), but an fsync returned before the cut with \(Self.describe(content))")
            }
        }
        if let underWay {
            verdict.checked += changing.count
            check(underWay, mountpoint: mountpoint, into: &verdict)
        }
        for file in unsynced where file.started < cut {
            verdict.checked += 1
            checkWritten(file.path, file.content, during: "unsynced \(file.path)", mountpoint: mountpoint, into: &verdict)
        }
        return verdict
    }

    private func check(_ operation: Operation, mountpoint: String, into verdict: inout Verdict) {
        let during = "during \(operation.name)"
        switch operation.change {
        case .creating(let path, let content):
            checkWritten(path, content, during: during, mountpoint: mountpoint, into: &verdict)
        case .atomic(let changes):
            let found = Dictionary(uniqueKeysWithValues: changes.keys.map { ($0, Self.content(mountpoint + "/" + $0)) })
            let old = changes.mapValues(\.old), new = changes.mapValues(\.new)
            if found != old && found != new {
                return verdict.failures.append("\(during): found \(Self.describe(found)), neither all before (\(Self.describe(old))) nor all after (\(Self.describe(new)))")
            }
        case .growing(let path, let old, let new):
            guard let found = Self.content(mountpoint + "/" + path) else {
                return verdict.failures.append("\(during): \(path) is gone; it held \(old.count) fsync'd bytes")
            }
            if found.count < old.count || found.count > new.count || Array(found.prefix(old.count)) != old {
                return verdict.failures.append("\(during): \(path) holds \(Self.describe(found)); expected its \(old.count) fsync'd bytes, then up to \(new.count - old.count) more")
            }
            if let byte = (old.count..<found.count).first(where: { found[$0] != new[$0] && found[$0] != 0 }) {
                verdict.failures.append("\(during): \(path) holds \(Self.describe(found)): appended byte \(byte) is neither written nor zero (\(Self.stale))")
            }
        case .rewriting(let path, let old, let new, let range):
            guard let found = Self.content(mountpoint + "/" + path) else {
                return verdict.failures.append("\(during): \(path) is gone; it held \(old.count) fsync'd bytes")
            }
            if found.count != old.count || found[..<range.lowerBound] != old[..<range.lowerBound] || found[range.upperBound...] != old[range.upperBound...] {
                return verdict.failures.append("\(during): \(path) holds \(Self.describe(found)); outside bytes \(range) it must hold its \(old.count) fsync'd bytes")
            }
            if let byte = range.first(where: { found[$0] != old[$0] && found[$0] != new[$0] }) {
                return verdict.failures.append("\(during): \(path) holds \(Self.describe(found)): rewritten byte \(byte) is neither old nor new")
            }
        }
    }

    /// What a byte that is neither written nor zero shows.
    static let stale = "what its block held before, bytes of a file deleted earlier, exposed by a commit durable before the data"

    /// A file being written, `content` its bytes: absent, or no longer than them, each byte written or zero.
    private func checkWritten(_ path: String, _ content: [UInt8], during: String, mountpoint: String, into verdict: inout Verdict) {
        guard let found = Self.content(mountpoint + "/" + path) else { return }
        if found.count > content.count {
            return verdict.failures.append("\(during): \(path) holds \(Self.describe(found)), more than the \(content.count) bytes written")
        }
        if let byte = found.indices.first(where: { found[$0] != content[$0] && found[$0] != 0 }) {
            verdict.failures.append("\(during): \(path) holds \(Self.describe(found)): byte \(byte) is neither written nor zero (\(Self.stale))")
        }
    }

    /// A file that cannot be read is an issue of its own (so its counting as absent never passes a check).
    static func content(_ path: String) -> Content {
        if access(path, F_OK) != 0 && errno == ENOENT { return nil }
        do {
            return try readFile(path)
        } catch {
            Issue.record("cannot read \(path): \(error)")
            return nil
        }
    }

    static func describe(_ content: Content) -> String {
        guard let content else { return "nothing (absent)" }
        let zeros = content.filter { $0 == 0 }.count
        return "\(content.count) bytes (\(zeros) zero, checksum \(content.reduce(UInt64(5381)) { $0 &* 33 &+ UInt64($1) }))"
    }

    static func describe(_ contents: [String: Content]) -> String {
        contents.sorted { $0.key < $1.key }.map { "\($0.key): \(describe($0.value))" }.joined(separator: ", ")
    }
}
