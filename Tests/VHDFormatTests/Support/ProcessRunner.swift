import Foundation
import TestSupport

/// The Debian tools the cross-checks run (qemu-img, qemu-io, ...) by name from /usr/bin, through
/// TestSupport's runner.
enum ProcessRunner {
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], timeout: TimeInterval = 120) throws -> ProcessResult {
        try runProcess(executable.hasPrefix("/") ? executable : "/usr/bin/" + executable, arguments, timeout: timeout)
    }

    /// Runs a tool that must succeed; its error output becomes the thrown message otherwise.
    @discardableResult
    static func check(_ executable: String, _ arguments: [String], timeout: TimeInterval = 120) throws -> String {
        let result = try run(executable, arguments, timeout: timeout)
        guard result.status == 0 else {
            throw ToolFailed(description: "\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)\(result.stdout)")
        }
        return result.stdout
    }
}

struct ToolFailed: Error, CustomStringConvertible {
    var description: String
}
