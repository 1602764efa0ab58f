import Foundation
import Glibc
import TestSupport

/// One thread of creates, writes, appends, rewrites in place, truncates, renames, replaces and unlinks under
/// a mount whose LUN writes are logged at `log`, each made durable with fsync (of the file, or of its
/// directories), between files written and never synced; notes in an `FsyncHistory` the log's size when each
/// durable operation started and settled.
struct CutWorkload {
    let mountpoint: String
    let log: String
    let seed: UInt64
    let operations: Int

    static let directories = ["d0", "d1"]
    static let sizes = [0, 1, 100, 4095, 4096, 5000, 65536, 200_000, 1 << 20]

    func run() throws -> FsyncHistory {
        var random = SeededRandom(seed: seed)
        var history = FsyncHistory()
        for directory in Self.directories { try sys("mkdir \(directory)") { mkdir(path(directory), 0o755) } }
        try syncDirectory("")
        for index in 0..<operations {
            let fresh = "\(Self.directories.randomElement(using: &random)!)/f\(index)"
            let content = patternBytes(count: Self.sizes.randomElement(using: &random)!, seed: random.next())
            let existing = history.files.randomElement(using: &random)
            let old = existing.flatMap { history.current[$0] ?? nil } ?? []
            let started = try logSize()
            let change: FsyncHistory.Change
            let name: String
            switch (Int.random(in: 0..<100, using: &random), existing) {
            case (0..<14, _), (_, nil):
                name = "create \(fresh)"
                try write(fresh, content, sync: true)
                change = .creating(path: fresh, content: content)
            case (14..<28, _):
                // Written, never synced: writes the cuts may keep or lose, as later flushes decide.
                try write(fresh + ".unsynced", content, sync: false)
                history.appendUnsynced(path: fresh + ".unsynced", content: content, started: started)
                continue
            case (28..<42, let target?):
                let added = patternBytes(count: Self.sizes.randomElement(using: &random)!, seed: random.next())
                name = "append \(added.count) bytes to \(target)"
                let fd = try sys("open \(target)") { open(path(target), O_WRONLY | O_APPEND) }
                defer { close(fd) }
                try writeAll(fd, added, at: old.count)
                try sys("fsync \(target)") { fsync(fd) }
                change = .growing(path: target, old: old, new: old + added)
            case (42..<54, let target?) where !old.isEmpty:
                let start = Int.random(in: 0..<old.count, using: &random)
                let range = start..<min(old.count, start + Int.random(in: 1...(256 << 10), using: &random))
                name = "rewrite \(range) of \(target)"
                var new = old
                new.replaceSubrange(range, with: patternBytes(count: range.count, seed: random.next()))
                let fd = try sys("open \(target)") { open(path(target), O_WRONLY) }
                defer { close(fd) }
                try writeAll(fd, Array(new[range]), at: range.lowerBound)
                try sys("fsync \(target)") { fsync(fd) }
                change = .rewriting(path: target, old: old, new: new, range: range)
            case (54..<62, let target?):
                let size = Int.random(in: 0...old.count, using: &random)
                name = "truncate \(target) to \(size)"
                try sys("truncate \(target)") { truncate(path(target), off_t(size)) }
                let fd = try sys("open \(target)") { open(path(target), O_RDONLY) }
                defer { close(fd) }
                try sys("fsync \(target)") { fsync(fd) }
                change = .atomic([target: (old, Array(old.prefix(size)))])
            case (62..<74, let target?):
                name = "rename \(target) to \(fresh)"
                try sys("rename \(target)") { renameErrno(path(target), path(fresh)) == 0 ? 0 : -1 }
                try syncDirectories(of: [target, fresh])
                change = .atomic([target: (old, nil), fresh: (nil, old)])
            case (74..<88, let target?):
                // The atomic replace of a file: a temporary written and fsync'd, renamed over it, its directory synced.
                let temporary = fresh + ".tmp"
                try write(temporary, content, sync: true)
                history.append(.init(name: "create \(temporary)", started: started, settled: try logSize(),
                                     change: .creating(path: temporary, content: content)))
                let renaming = try logSize()
                try sys("rename \(temporary)") { renameErrno(path(temporary), path(target)) == 0 ? 0 : -1 }
                try syncDirectories(of: [temporary, target])
                history.append(.init(name: "replace \(target) by \(temporary)", started: renaming, settled: try logSize(),
                                     change: .atomic([temporary: (content, nil), target: (old, content)])))
                continue
            case (_, let target?):
                name = "unlink \(target)"
                try sys("unlink \(target)") { unlink(path(target)) }
                try syncDirectories(of: [target])
                change = .atomic([target: (old, nil)])
            }
            history.append(.init(name: name, started: started, settled: try logSize(), change: change))
        }
        return history
    }

    private func path(_ relative: String) -> String { relative.isEmpty ? mountpoint : mountpoint + "/" + relative }

    private func logSize() throws -> Int64 {
        var info = stat()
        _ = try sys("stat \(log)") { stat(log, &info) }
        return Int64(info.st_size)
    }

    private func write(_ relative: String, _ content: [UInt8], sync: Bool) throws {
        try writeFile(path(relative), content, fsync: sync)
    }

    private func syncDirectories(of paths: [String]) throws {
        for directory in Set(paths.map { ($0 as NSString).deletingLastPathComponent }).sorted() { try syncDirectory(directory) }
    }

    private func syncDirectory(_ relative: String) throws {
        let fd = try sys("open \(relative)") { open(path(relative), O_RDONLY | O_DIRECTORY) }
        defer { close(fd) }
        try sys("fsyncdir \(relative)") { fsync(fd) }
    }
}
