import Foundation

/// A unique temporary directory, removed when the test is done with it.
final class TestDirectory {
    let path: String

    init(_ name: String = #function) throws {
        let clean = name.filter { $0.isLetter || $0.isNumber }
        path = NSTemporaryDirectory() + "vhdformat-\(clean)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit {
        // VHD_TEST_KEEP=1 keeps the images of a failing run for a look with the peers' tools.
        if ProcessInfo.processInfo.environment["VHD_TEST_KEEP"] == nil { try? FileManager.default.removeItem(atPath: path) }
    }
}
