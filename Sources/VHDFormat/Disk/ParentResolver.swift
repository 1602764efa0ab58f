import Foundation
import Primitives

/// Turns a child's parent locators into candidate paths on this host, in the order worth trying:
/// relative locators first (they survive moving a chain together), then volume and absolute paths,
/// then the parent's file name next to the child.
enum ParentResolver {
    static func candidates(for link: ParentLink, childPath: String,
                           normalize: (String) -> String = ParentResolver.normalize) -> [String] {
        let childDirectory = PathText.directory(of: childPath)
        let relativeKinds = ["W2ru", "Wi2r", "relative_path"]
        let ordered = link.locators.filter { relativeKinds.contains($0.kind) }
            + link.locators.filter { $0.kind == "volume_path" }
            + link.locators.filter { !relativeKinds.contains($0.kind) && $0.kind != "volume_path" }
        var paths: [String] = []
        for locator in ordered {
            let path = locator.path.replacingOccurrences(of: "\\", with: "/")
            if relativeKinds.contains(locator.kind) {
                paths.append(normalize(childDirectory.isEmpty ? path : childDirectory + "/" + path))
            } else if path.hasPrefix("/") {
                paths.append(normalize(path))
            }
        }
        var names = ordered.map { ($0.path.replacingOccurrences(of: "\\", with: "/") as NSString).lastPathComponent }
        if let name = link.name, !name.isEmpty {
            names.insert((name.replacingOccurrences(of: "\\", with: "/") as NSString).lastPathComponent, at: 0)
        }
        for name in names where !name.isEmpty {
            paths.append(normalize(childDirectory.isEmpty ? name : childDirectory + "/" + name))
        }
        var seen = Set<String>()
        return paths.filter { seen.insert($0).inserted }
    }

    static func normalize(_ path: String) -> String {
        (path as NSString).standardizingPath
    }

    /// "." and ".." taken away by the text alone, nothing asked of the file system ("/.." stays "/").
    static func lexicallyNormalized(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..":
                if let last = parts.last, last != ".." { parts.removeLast() } else if !path.hasPrefix("/") { parts.append(part) }
            default: parts.append(part)
            }
        }
        let joined = parts.joined(separator: "/")
        return path.hasPrefix("/") ? "/" + joined : joined
    }

    /// The locator value a child stores for a parent: the path from the child's directory, Windows style.
    static func relativePath(from childPath: String, to parentPath: String) -> String {
        let child = URL(fileURLWithPath: childPath).standardizedFileURL.deletingLastPathComponent().pathComponents
        let parent = URL(fileURLWithPath: parentPath).standardizedFileURL.pathComponents
        var common = 0
        while common < child.count, common < parent.count - 1, child[common] == parent[common] { common += 1 }
        let ups = Array(repeating: "..", count: child.count - common)
        let parts = ups + parent[common...]
        return parts.count == 1 ? ".\\" + parts[0] : parts.joined(separator: "\\")
    }

    /// An absolute path written the Windows way (backslashes), as readers that take the last
    /// backslash-separated component as the file name (libvhdi) expect.
    static func windowsAbsolutePath(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.path.replacingOccurrences(of: "/", with: "\\")
    }
}
