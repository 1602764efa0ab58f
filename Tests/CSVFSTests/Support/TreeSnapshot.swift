import Foundation
import Glibc

/// Everything the differential test compares about a tree: per relative path, type, permission bits,
/// link count, and size + contents (files) or target (symlinks). Directory sizes and times are fs-specific.
struct TreeSnapshot: Equatable {
    struct Entry: Equatable, CustomStringConvertible {
        var type: mode_t
        var mode: mode_t
        var links: UInt
        var size: Int64?
        var contents: [UInt8]?
        var target: String?

        var description: String {
            let kind = type == S_IFDIR ? "dir" : type == S_IFLNK ? "symlink" : type == S_IFREG ? "file" : "type \(type)"
            var text = "\(kind) mode \(String(mode, radix: 8)) links \(links)"
            if let size { text += " size \(size)" }
            if let target { text += " -> \(target)" }
            return text
        }
    }

    var entries: [String: Entry] = [:]

    init(root: String) throws {
        try walk(root: root, relative: "")
    }

    private mutating func walk(root: String, relative: String) throws {
        let directory = relative.isEmpty ? root : root + "/" + relative
        for name in try listDirectory(directory) {
            let path = relative.isEmpty ? name : relative + "/" + name
            let full = root + "/" + path
            let status = try lstatOrThrow(full)
            var entry = Entry(type: fileType(status), mode: status.st_mode & 0o7777, links: UInt(status.st_nlink))
            switch entry.type {
            case S_IFREG:
                entry.size = Int64(status.st_size)
                entry.contents = try readFile(full)
            case S_IFLNK:
                entry.size = Int64(status.st_size)
                entry.target = try readlinkString(full)
            default:
                break
            }
            entries[path] = entry
            if entry.type == S_IFDIR { try walk(root: root, relative: path) }
        }
    }

    /// Human-readable differences, at most `limit`.
    func differences(from other: TreeSnapshot, limit: Int = 20) -> [String] {
        var found: [String] = []
        for path in Set(entries.keys).union(other.entries.keys).sorted() where found.count < limit {
            let mine = entries[path], theirs = other.entries[path]
            guard mine != theirs else { continue }
            switch (mine, theirs) {
            case (nil, let theirs?): found.append("\(path): missing here, there \(theirs)")
            case (let mine?, nil): found.append("\(path): \(mine) here, missing there")
            case (let mine?, let theirs?):
                let contents = mine.contents != theirs.contents ? " (contents differ)" : ""
                found.append("\(path): \(mine) here, \(theirs) there\(contents)")
            default: break
            }
        }
        return found
    }
}
