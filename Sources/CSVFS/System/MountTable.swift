import Foundation

/// The kernel's mount table as this process sees it (/proc/self/mountinfo).
public enum MountTable {
    public struct Entry: Sendable {
        public var mountpoint: String
        public var fileSystemType: String
        public var source: String
    }

    public static func entries() -> [Entry] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count > 4, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count else { return nil }
            return Entry(mountpoint: unescape(fields[4]), fileSystemType: fields[separator + 1], source: unescape(fields[separator + 2]))
        }
    }

    public static func entry(at mountpoint: String) -> Entry? {
        entries().last { $0.mountpoint == mountpoint }
    }

    public static func isMounted(_ mountpoint: String) -> Bool { entry(at: mountpoint) != nil }

    /// The CSVFS volume mounted at `mountpoint`, if one is.
    public static func csvfsMount(at mountpoint: String) -> Entry? {
        entries().last { $0.mountpoint == mountpoint && $0.fileSystemType == "fuse.csvfs" }
    }

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
