import Primitives
import Testing

/// The directory part of a path, for names as short as one letter (where Foundation traps).
struct PathTextTests {
    @Test(arguments: [("s", ""), ("ab", ""), ("./s", "."), ("/s", "/"), ("/x/s", "/x"), ("a/b/c", "a/b")])
    func directoryOfAPath(_ path: String, _ directory: String) {
        #expect(PathText.directory(of: path) == directory)
    }
}
