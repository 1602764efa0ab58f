import Foundation
import TestSupport
import Glibc

/// One file-system operation with all its arguments fixed, so it can be applied to two trees alike.
enum RandomFileOperation: CustomStringConvertible {
    case create(String, mode: mode_t, exclusive: Bool)
    case write(String, offset: Int, count: Int, seed: UInt64, append: Bool)
    case truncate(String, size: Int)
    case mkdir(String, mode: mode_t)
    case rmdir(String)
    case unlink(String)
    case rename(String, String, flags: UInt32)
    case link(String, String)
    case symlink(target: String, String)
    case chmod(String, mode: mode_t)
    case fallocate(String, mode: Int32, offset: Int, length: Int)
    case read(String)

    /// What an operation returned: errno (0 for success), a count, and bytes read.
    struct Outcome: Equatable, CustomStringConvertible {
        var errno: Int32 = 0
        var count = 0
        var bytes: [UInt8]?
        var description: String {
            errno != 0 ? errnoName(errno) : "OK" + (count != 0 ? " \(count)" : "") + (bytes.map { " \($0.count) bytes" } ?? "")
        }
    }

    static let leaves = ["f", "g", "h", "a", "b", "c", "d", "e"]
    static let targets = ["f", "../g", "a/h", "c/e/f", "nowhere", "."]

    /// What exists in the tree the operations are generated against (the plain directory: its state is
    /// the expected one, so the same seed always gives the same sequence).
    struct Namespace {
        var entries: [String] = []
        var directories: [String] = [""]

        init(root: String) throws {
            try scan(root: root, relative: "")
        }

        private mutating func scan(root: String, relative: String) throws {
            for name in try listDirectory(relative.isEmpty ? root : root + "/" + relative) {
                let path = relative.isEmpty ? name : relative + "/" + name
                entries.append(path)
                if fileType(try lstatOrThrow(root + "/" + path)) == S_IFDIR {
                    directories.append(path)
                    try scan(root: root, relative: path)
                }
            }
        }

        /// Mostly an existing entry, else a fresh name in an existing directory (now and then in a missing one).
        func randomPath(using random: inout SeededRandom) -> String {
            let roll = Int.random(in: 0..<10, using: &random)
            if roll < 5, let existing = entries.randomElement(using: &random) { return existing }
            let directory = roll == 9 ? "missing" : directories.randomElement(using: &random)!
            let leaf = RandomFileOperation.leaves.randomElement(using: &random)!
            return directory.isEmpty ? leaf : directory + "/" + leaf
        }
    }

    static func random(in namespace: Namespace, using random: inout SeededRandom) -> RandomFileOperation {
        let path = namespace.randomPath(using: &random), other = namespace.randomPath(using: &random)
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<14: return .create(path, mode: [0o644, 0o600, 0o755, 0o640].randomElement(using: &random)!,
                                    exclusive: Bool.random(using: &random))
        case 14..<32: return .write(path, offset: [0, 1, 4095, 4096, 10_000, 65536, 200_000].randomElement(using: &random)!,
                                    count: Int.random(in: 1...70_000, using: &random), seed: random.next(),
                                    append: Int.random(in: 0..<5, using: &random) == 0)
        case 32..<38: return .truncate(path, size: [0, 1, 4096, 5000, 100_000, 300_000].randomElement(using: &random)!)
        case 38..<48: return .mkdir(path, mode: [0o755, 0o700, 0o750].randomElement(using: &random)!)
        case 48..<53: return .rmdir(path)
        case 53..<60: return .unlink(path)
        case 60..<70: return .rename(path, other, flags: [0, 0, 0, 1, 2].randomElement(using: &random)!)
        case 70..<75: return .link(path, other)
        case 75..<80: return .symlink(target: targets.randomElement(using: &random)!, path)
        case 80..<85: return .chmod(path, mode: mode_t.random(in: 0...0o777, using: &random))
        case 85..<91: return .fallocate(path, mode: [0, LinuxFlags.fallocKeepSize, LinuxFlags.fallocPunchHole | LinuxFlags.fallocKeepSize]
                                            .randomElement(using: &random)!,
                                        offset: [0, 100, 4096, 50_000].randomElement(using: &random)!,
                                        length: [1, 4096, 10_000, 100_000].randomElement(using: &random)!)
        default: return .read(path)
        }
    }

    func apply(in root: String) -> Outcome {
        func full(_ relative: String) -> String { root + "/" + relative }
        switch self {
        case .create(let path, let mode, let exclusive):
            let fd = Glibc.open(full(path), O_WRONLY | O_CREAT | (exclusive ? O_EXCL : 0), mode)
            if fd < 0 { return Outcome(errno: errno) }
            Glibc.close(fd)
            return Outcome()
        case .write(let path, let offset, let count, let seed, let append):
            let fd = Glibc.open(full(path), O_WRONLY | (append ? O_APPEND : 0))
            if fd < 0 { return Outcome(errno: errno) }
            defer { Glibc.close(fd) }
            let data = patternBytes(count: count, seed: seed)
            let written = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, count, off_t(offset)) }
            return written < 0 ? Outcome(errno: errno) : Outcome(count: written)
        case .truncate(let path, let size):
            return Outcome(errno: errnoOf { Glibc.truncate(full(path), off_t(size)) })
        case .mkdir(let path, let mode):
            return Outcome(errno: errnoOf { Glibc.mkdir(full(path), mode) })
        case .rmdir(let path):
            return Outcome(errno: errnoOf { Glibc.rmdir(full(path)) })
        case .unlink(let path):
            return Outcome(errno: errnoOf { Glibc.unlink(full(path)) })
        case .rename(let from, let to, let flags):
            return Outcome(errno: renameErrno(full(from), full(to), flags: flags))
        case .link(let from, let to):
            return Outcome(errno: errnoOf { Glibc.link(full(from), full(to)) })
        case .symlink(let target, let path):
            return Outcome(errno: errnoOf { Glibc.symlink(target, full(path)) })
        case .chmod(let path, let mode):
            return Outcome(errno: errnoOf { Glibc.chmod(full(path), mode) })
        case .fallocate(let path, let mode, let offset, let length):
            return Outcome(errno: fallocateErrno(full(path), mode: mode, offset: offset, length: length))
        case .read(let path):
            let fd = Glibc.open(full(path), O_RDONLY)
            if fd < 0 { return Outcome(errno: errno) }
            defer { Glibc.close(fd) }
            do { return Outcome(bytes: try readAll(fd)) } catch let error as SyscallError {
                return Outcome(errno: error.code)
            } catch {
                return Outcome(errno: EIO)
            }
        }
    }

    var description: String {
        switch self {
        case .create(let path, let mode, let exclusive): return "create \(path) \(String(mode, radix: 8))\(exclusive ? " O_EXCL" : "")"
        case .write(let path, let offset, let count, _, let append): return "write \(path) @\(offset) \(count)\(append ? " O_APPEND" : "")"
        case .truncate(let path, let size): return "truncate \(path) \(size)"
        case .mkdir(let path, let mode): return "mkdir \(path) \(String(mode, radix: 8))"
        case .rmdir(let path): return "rmdir \(path)"
        case .unlink(let path): return "unlink \(path)"
        case .rename(let from, let to, let flags): return "rename \(from) \(to) flags \(flags)"
        case .link(let from, let to): return "link \(from) \(to)"
        case .symlink(let target, let path): return "symlink \(target) \(path)"
        case .chmod(let path, let mode): return "chmod \(path) \(String(mode, radix: 8))"
        case .fallocate(let path, let mode, let offset, let length): return "fallocate \(path) mode \(mode) @\(offset) \(length)"
        case .read(let path): return "read \(path)"
        }
    }
}
