import Foundation
import TestSupport
import VHDFormat

/// The image tools, each run with a timeout: qemu-img and qemu-io from the system, vhdtool from this build.
enum DiskTools {
    static let timeout: TimeInterval = 120

    static var vhdtool: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("vhdtool").path
    }

    @discardableResult
    static func run(_ command: [String], mustSucceed: Bool = true) throws -> ProcessResult {
        let executable = command[0] == "vhdtool" ? vhdtool : "/usr/bin/" + command[0]
        let result = try runProcess(executable, Array(command.dropFirst()), timeout: timeout)
        if mustSucceed, !result.succeeded {
            throw FixtureError("\(command.joined(separator: " ")): \(result)")
        }
        return result
    }

    /// What vhdtool says of the image and its chain, the image first.
    static func info(_ path: String) throws -> [DiskFacts] {
        let result = try run(["vhdtool", "info", "--json", path])
        return try JSONDecoder().decode([DiskFacts].self, from: Data(result.stdout.utf8))
    }
}
