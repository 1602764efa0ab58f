import Foundation
import Glibc

/// What a finished process left behind.
struct ProcessResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var succeeded: Bool { status == 0 }
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// A child started with posix_spawn: stdin from /dev/null, output to files (no pipe can fill up),
/// no other descriptor inherited, reaped by its own PID with waitpid, and every wait has a timeout.
final class ChildProcess {
    let pid: pid_t
    private let stdoutPath: String
    private let stderrPath: String
    private var exitStatus: Int32?

    init(_ executable: String, _ arguments: [String], outputDirectory: URL? = nil) throws {
        let directory = outputDirectory ?? FileManager.default.temporaryDirectory
        let tag = UUID().uuidString.prefix(8)
        stdoutPath = directory.appendingPathComponent("proc-\(tag).out").path
        stderrPath = directory.appendingPathComponent("proc-\(tag).err").path

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = LibC.addclosefrom(&actions, 3)

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, nil, argv, environ)
        guard rc == 0 else { throw SyscallError(call: "posix_spawn \(executable)", code: rc) }
        pid = child
    }

    /// The exit status (128 + signal when killed), nil if still running at the deadline.
    func wait(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while exitStatus == nil {
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid {
                let signal = status & 0x7f
                exitStatus = signal == 0 ? (status >> 8) & 0xff : 128 + signal
            } else if reaped < 0 && errno != EINTR {
                exitStatus = -1
            } else if Date() >= deadline {
                return nil
            } else {
                usleep(5_000)
            }
        }
        return exitStatus
    }

    var isRunning: Bool { wait(timeout: 0) == nil }

    /// SIGKILL by PID, then reap it.
    func kill(timeout: TimeInterval = 10) {
        if isRunning { _ = Glibc.kill(pid, SIGKILL) }
        _ = wait(timeout: timeout)
    }

    func result(status: Int32) -> ProcessResult {
        ProcessResult(status: status, stdout: Self.read(stdoutPath), stderr: Self.read(stderrPath))
    }

    var stderrText: String { Self.read(stderrPath) }

    func removeOutputFiles() {
        unlink(stdoutPath)
        unlink(stderrPath)
    }

    private static func read(_ path: String) -> String {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}

struct ProcessTimeout: Error, CustomStringConvertible {
    let command: String
    let seconds: TimeInterval
    var description: String { "\(command) did not finish within \(Int(seconds)) s (killed)" }
}

/// Runs a program to completion; kills it and throws if it outlives `timeout`.
@discardableResult
func runProcess(_ executable: String, _ arguments: [String], timeout: TimeInterval = 60) throws -> ProcessResult {
    let child = try ChildProcess(executable, arguments)
    defer { child.removeOutputFiles() }
    guard let status = child.wait(timeout: timeout) else {
        child.kill()
        throw ProcessTimeout(command: ([executable] + arguments).joined(separator: " "), seconds: timeout)
    }
    return child.result(status: status)
}
