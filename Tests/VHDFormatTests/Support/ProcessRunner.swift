import Foundation

struct ProcessResult {
    var status: Int32
    var output: String
    var error: String
}

struct ProcessTimedOut: Error, CustomStringConvertible {
    var command: String
    var description: String { "timed out: \(command)" }
}

/// Runs a tool to completion with a time limit; a tool still running at the limit is killed.
enum ProcessRunner {
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], timeout: TimeInterval = 120) throws -> ProcessResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/" + executable)
        process.arguments = arguments
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("out-\(UUID().uuidString)")
        let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outputFile)
            try? FileManager.default.removeItem(at: errorFile)
        }
        let out = try FileHandle(forWritingTo: outputFile), err = try FileHandle(forWritingTo: errorFile)
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw ProcessTimedOut(command: ([executable] + arguments).joined(separator: " "))
        }
        process.waitUntilExit()
        try out.close()
        try err.close()
        return ProcessResult(status: process.terminationStatus,
                             output: (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "",
                             error: (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "")
    }

    /// Runs a tool that must succeed; its error output becomes the thrown message otherwise.
    @discardableResult
    static func check(_ executable: String, _ arguments: [String], timeout: TimeInterval = 120) throws -> String {
        let result = try run(executable, arguments, timeout: timeout)
        guard result.status == 0 else {
            throw ToolFailed(description: "\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.error)\(result.output)")
        }
        return result.output
    }
}

struct ToolFailed: Error, CustomStringConvertible {
    var description: String
}
