import Foundation
import TestSupport
import Glibc

/// Creates, writes, replaces (write temp + fsync + rename + fsyncdir) and deletes files under a mount,
/// and keeps unlinked files open, until a syscall fails (the server was killed), recording in the journal
/// what each sync made durable. Replaces and deletes touch only files under `owner` (one owner per thread).
struct CrashWorkload: Sendable {
    let mountpoint: String
    let directory: String  // relative to the mountpoint, made before the workload starts
    let owner: String      // the path prefix this workload may replace or delete, across rounds
    let seed: UInt64
    let journal: CrashJournal
    let stop: Locked<Bool>

    static let sizes = [0, 1, 4095, 4096, 5000, 65536, 200_000, 1 << 20]

    /// Runs until the first failure; returns how many operations completed.
    func run() -> Int {
        var random = SeededRandom(seed: seed)
        var completed = 0
        var orphans: [Int32] = []
        defer { orphans.forEach { close($0) } }
        do {
            while !stop.withLock({ $0 }) {
                let roll = Int.random(in: 0..<100, using: &random)
                let contentSeed = random.next()
                let size = Self.sizes.randomElement(using: &random)!
                let name = "\(directory)/f\(completed)"
                let state = CrashJournal.State.file(seed: contentSeed, size: size)
                switch roll {
                case 0..<36:
                    try write(name, state, sync: true)
                    journal.durable(name, state)
                case 36..<40:
                    // An open, unlinked file: the server holds an orphan when it is killed.
                    let fd = try sys("open \(name)") { open(path(name), O_RDWR | O_CREAT, 0o644) }
                    orphans.append(fd)
                    try sys("unlink \(name)") { unlink(path(name)) }
                    try writeAll(fd, state.bytes ?? [], at: 0)
                case 40..<65:
                    try write(name, state, sync: false)
                    journal.written(name, state)
                case 65..<80:
                    guard let target = journal.durableFiles(under: owner).randomElement(using: &random) else { continue }
                    try replace(target, with: state, temporary: name + ".tmp")
                case 80..<92:
                    guard let target = journal.durableFiles(under: owner).randomElement(using: &random) else { continue }
                    journal.begin(target, to: .absent)
                    try sys("unlink \(target)") { unlink(path(target)) }
                    try syncDirectory(of: target)
                    journal.durable(target, .absent)
                default:
                    try sys("syncfs") { syncfsErrno(mountpoint) == 0 ? 0 : -1 }
                    journal.syncedAll()
                }
                completed += 1
            }
        } catch {}
        return completed
    }

    private func path(_ relative: String) -> String { mountpoint + "/" + relative }

    private func write(_ name: String, _ state: CrashJournal.State, sync: Bool) throws {
        let fd = try sys("open \(name)") { open(path(name), O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
        defer { close(fd) }
        try writeAll(fd, state.bytes ?? [], at: 0)
        if sync { try sys("fsync \(name)") { fsync(fd) } }
    }

    private func replace(_ target: String, with state: CrashJournal.State, temporary: String) throws {
        try write(temporary, state, sync: true)
        journal.begin(target, to: state)
        guard renameErrno(path(temporary), path(target)) == 0 else { throw SyscallError(call: "rename", code: errno) }
        try syncDirectory(of: target)
        journal.durable(target, state)
    }

    private func syncDirectory(of relative: String) throws {
        let parent = (path(relative) as NSString).deletingLastPathComponent
        let fd = try sys("open \(parent)") { open(parent, O_RDONLY | O_DIRECTORY) }
        defer { close(fd) }
        try sys("fsyncdir \(parent)") { fsync(fd) }
    }
}
