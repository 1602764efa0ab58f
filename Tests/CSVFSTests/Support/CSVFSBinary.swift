import Foundation

/// Where the csvfs program under test lives: $CSVFS_BIN, else next to the running test bundle
/// (the build products directory), else any `.build*/debug/csvfs` in the package.
enum CSVFSBinary {
    static func path() throws -> String {
        if let override = ProcessInfo.processInfo.environment["CSVFS_BIN"], !override.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: override) else {
                throw FixtureError("CSVFS_BIN=\(override) is not an executable file")
            }
            return override
        }
        for candidate in candidates() where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw FixtureError("csvfs binary not found (looked in \(candidates().joined(separator: ", "))): build first: swift build")
    }

    private static func candidates() -> [String] {
        var directories: [URL] = []
        // The test runner is an executable in the build products directory (e.g. .build/debug/CSVFSPackageTests.xctest).
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            directories.append(URL(fileURLWithPath: executable).deletingLastPathComponent())
        }
        directories.append(Bundle.main.bundleURL)
        directories.append(Bundle.main.bundleURL.deletingLastPathComponent())
        // Tests/CSVFSTests/Support/CSVFSBinary.swift -> package root.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let builds = ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? [])
            .filter { $0.hasPrefix(".build") }.sorted()
        directories += builds.map { root.appendingPathComponent($0).appendingPathComponent("debug") }
        return directories.map { $0.appendingPathComponent("csvfs").path }
    }
}

/// A test setup step that failed (not a filesystem result under test).
struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
