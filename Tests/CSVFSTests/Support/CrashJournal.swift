import Foundation
import Glibc

/// What a crash may leave at each path the crash workload made durable: the set of acceptable states.
/// A path is tracked only once a sync made it durable; while an operation on it is in flight, both its
/// old and new states are acceptable.
final class CrashJournal: Sendable {
    enum State: Hashable, Sendable, CustomStringConvertible {
        case absent
        case file(seed: UInt64, size: Int)

        var bytes: [UInt8]? {
            if case .file(let seed, let size) = self { return patternBytes(count: size, seed: seed) }
            return nil
        }

        var description: String {
            switch self {
            case .absent: return "absent"
            case .file(let seed, let size): return "\(size) bytes of pattern \(seed)"
            }
        }
    }

    private let states = Locked<[String: Set<State>]>([:])
    /// Written without fsync: durable only once a later syncfs returns.
    private let pending = Locked<[String: State]>([:])

    /// Paths under `prefix` whose only acceptable state is a file (targets for replace and unlink).
    func durableFiles(under prefix: String) -> [String] {
        states.withLock { $0.filter { $0.key.hasPrefix(prefix) && $0.value.count == 1 && $0.value.first != .absent }.map(\.key) }
            .sorted()
    }

    func state(of path: String) -> State? {
        states.withLock { $0[path].flatMap { $0.count == 1 ? $0.first : nil } }
    }

    /// An operation is about to change `path` to `new`: either state may survive a crash now.
    func begin(_ path: String, to new: State) { states.withLock { _ = $0[path, default: []].insert(new) } }

    /// A sync returned: `path` is `state` from now on.
    func durable(_ path: String, _ state: State) { states.withLock { $0[path] = [state] } }

    func written(_ path: String, _ state: State) { pending.withLock { $0[path] = state } }

    /// syncfs returned: everything written before it is durable.
    func syncedAll() {
        let written = pending.withLock { all in defer { all = [:] }; return all }
        for (path, state) in written { durable(path, state) }
    }

    /// A crash lost whatever was not synced.
    func dropPending() { pending.withLock { $0 = [:] } }

    var tracked: [String: Set<State>] { states.withLock { $0 } }

    /// After a remount the volume's state is what a later crash must keep: collapse to what was found.
    func settle(_ path: String, to found: State) { durable(path, found) }
}
