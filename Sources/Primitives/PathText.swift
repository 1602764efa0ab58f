/// Paths as text, without Foundation: this toolchain's `NSString.deletingLastPathComponent` traps on a
/// one-letter name ("s"), and a file name is user input.
public enum PathText {
    /// Everything before the last "/", "" for a bare name, "/" for a name in the root.
    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
