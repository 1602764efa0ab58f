import Foundation

/// The kernel's mount table as this process sees it (/proc/self/mountinfo).
enum MountTable {
    struct Entry {
        var mountpoint: String
        var fileSystemType: String
        var source: String
    }

    static func entries() -> [Entry] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count > 4, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count else { return nil }
            return Entry(mountpoint: unescape(fields[4]), fileSystemType: fields[separator + 1], source: unescape(fields[separator + 2]))
        }
    }

    static func entry(at mountpoint: String) -> Entry? {
        entries().last { $0.mountpoint == mountpoint }
    }

    static func isMounted(_ mountpoint: String) -> Bool { entry(at: mountpoint) != nil }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    private static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        let source = Array(field.utf8)
        var index = 0
        while index < source.count {
            if source[index] == UInt8(ascii: "\\"), index + 3 < source.count,
               let code = UInt8(String(decoding: source[(index + 1)...(index + 3)], as: UTF8.self), radix: 8) {
                bytes.append(code)
                index += 4
            } else {
                bytes.append(source[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// PIDs of live processes whose command line mentions `text` (used to find a background server by its unique LUN path).
func processIDs(withArgument text: String) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { name -> pid_t? in
        guard let pid = pid_t(name), pid != getpid(),
              let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return nil }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return arguments.contains(text) ? pid : nil
    }
}
