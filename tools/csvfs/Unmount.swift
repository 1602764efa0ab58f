import ArgumentParser
import CSVFS
import Foundation
import Glibc

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount a CSVFS volume and wait until its server has closed the LUN.")

    @Argument(help: "The mountpoint.")
    var mountpoint: String

    @Option(help: "Seconds to wait for the server to finish.")
    var timeout: Double = 60

    func run() throws {
        let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        guard let mount = MountTable.find(mountpoint: path) else {
            throw Failure("csvfs unmount: \(mountpoint) is not a mounted CSVFS volume")
        }
        guard umount2(path, 0) == 0 else {
            throw Failure("csvfs unmount: \(mountpoint): \(Errno.current)")
        }
        // The server checkpoints and releases the LUN after the kernel lets go; wait for that.
        let deadline = Date().addingTimeInterval(timeout)
        while VolumeUsage.isInUse(path: mount.source) {
            if Date() > deadline { throw Failure("csvfs unmount: server still holds \(mount.source) after \(Int(timeout)) s") }
            usleep(20_000)
        }
    }
}

/// Mounts as /proc/self/mountinfo lists them.
enum MountTable {
    struct Entry {
        var mountpoint: String
        var fileSystemType: String
        var source: String
    }

    static func entries() -> [Entry] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map { unescape(String($0)) }
            guard let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count, fields.count > 4 else { return nil }
            return Entry(mountpoint: fields[4], fileSystemType: fields[separator + 1], source: fields[separator + 2])
        }
    }

    static func find(mountpoint: String) -> Entry? {
        entries().last { $0.mountpoint == mountpoint && $0.fileSystemType == "fuse.csvfs" }
    }

    /// mountinfo writes space, tab, newline and backslash as octal escapes.
    private static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var result = "", characters = Array(field), index = 0
        while index < characters.count {
            if characters[index] == "\\", index + 3 < characters.count, let code = UInt8(String(characters[(index + 1)...(index + 3)]), radix: 8) {
                result.append(Character(UnicodeScalar(code)))
                index += 4
            } else {
                result.append(characters[index])
                index += 1
            }
        }
        return result
    }
}
