import CSVFSSystem
import Foundation
import Glibc
import Primitives

/// What a finished process left behind.
public struct ProcessResult: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public var succeeded: Bool { status == 0 }
    public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// A failed child: how it was started and what it left.
public struct ProcessFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A child of the tests, tools and benchmarks: started with posix_spawn, stdin from /dev/null (or a
/// lifeline pipe), output to files (no pipe can fill up), no other descriptor inherited, signalled and
/// reaped by its own PID, and every wait has a timeout. The one way our tests run a process.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    private let stdoutPath: String
    private let stderrPath: String
    private let exitStatus = Locked<Int32?>(nil)
    /// Write end of the lifeline: the child's stdin, closed by `closeLifeline()` or by our death.
    private let lifeline = Locked<Int32?>(nil)

    /// `environment` is added to this process's; with `lifeline`, the child's stdin is a pipe that
    /// reads end-of-file once this process closes its end or dies (a child can watch it to exit with us).
    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                outputDirectory: URL? = nil, lifeline withLifeline: Bool = false) throws {
        let directory = outputDirectory ?? FileManager.default.temporaryDirectory
        let tag = UUID().uuidString.prefix(8)
        stdoutPath = directory.appendingPathComponent("proc-\(tag).out").path
        stderrPath = directory.appendingPathComponent("proc-\(tag).err").path

        var pipeEnds: [Int32] = [-1, -1]
        if withLifeline, csvfs_pipe_cloexec(&pipeEnds) != 0 {
            throw ProcessFailure("pipe for \(executable): \(String(cString: strerror(errno)))")
        }
        defer { if pipeEnds[0] >= 0 { close(pipeEnds[0]) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if withLifeline {
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = csvfs_spawn_close_from(&actions, 3)

        var variables = ProcessInfo.processInfo.environment
        variables.merge(environment) { _, new in new }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        // A clean signal state: the test runner's threads block signals (which a child would inherit), and a
        // child that waits for its own SIGALRM must get it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t(), everySignal = sigset_t()
        sigemptyset(&noSignals)
        sigfillset(&everySignal)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &everySignal)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            if pipeEnds[1] >= 0 { close(pipeEnds[1]) }
            throw ProcessFailure("posix_spawn \(executable): \(String(cString: strerror(rc)))")
        }
        pid = child
        if withLifeline { lifeline.withLock { $0 = pipeEnds[1] } }
    }

    deinit { closeLifeline() }

    /// The exit status (128 + signal when killed), nil if still running at the deadline.
    public func wait(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let status = exitStatus.withLock({ $0 }) { return status }
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid {
                let signal = status & 0x7f
                exitStatus.withLock { $0 = signal == 0 ? (status >> 8) & 0xff : 128 + signal }
            } else if reaped < 0 && errno != EINTR {
                exitStatus.withLock { $0 = -1 }
            } else if Date() >= deadline {
                return nil
            } else {
                usleep(5_000)
            }
        }
    }

    public var isRunning: Bool { wait(timeout: 0) == nil }

    /// Sends `signal` by PID, if the child has not been reaped (so the PID is still ours).
    public func signal(_ signal: Int32) {
        if isRunning { _ = Glibc.kill(pid, signal) }
    }

    /// SIGKILL by PID, then reap it.
    public func kill(timeout: TimeInterval = 10) {
        signal(SIGKILL)
        _ = wait(timeout: timeout)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `timeout`; reaped either way.
    public func stop(timeout: TimeInterval = 5) {
        signal(SIGTERM)
        if wait(timeout: timeout) == nil { kill() }
    }

    /// Closes our end of the lifeline: the child reads end-of-file on stdin.
    public func closeLifeline() {
        if let fd = lifeline.withLock({ end -> Int32? in defer { end = nil }; return end }) { close(fd) }
    }

    /// Closes the lifeline and waits for the child to exit, as a child that watches it does; kills it if it has
    /// not within `timeout`. Its exit status, nil if it had to be killed.
    public func finishByLifeline(timeout: TimeInterval = 10) -> Int32? {
        closeLifeline()
        guard let status = wait(timeout: timeout) else {
            kill()
            return nil
        }
        return status
    }

    public func result(status: Int32) -> ProcessResult {
        ProcessResult(status: status, stdout: Self.read(stdoutPath), stderr: Self.read(stderrPath))
    }

    public var stderrText: String { Self.read(stderrPath) }
    /// What the child has written to stdout so far.
    public var stdoutText: String { Self.read(stdoutPath) }

    public func removeOutputFiles() {
        unlink(stdoutPath)
        unlink(stderrPath)
    }

    private static func read(_ path: String) -> String {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}

public struct ProcessTimeout: Error, CustomStringConvertible {
    public let command: String
    public let seconds: TimeInterval
    public var description: String { "\(command) did not finish within \(Int(seconds)) s (killed)" }
}

/// Runs a program to completion; kills it and throws if it outlives `timeout`.
@discardableResult
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                       timeout: TimeInterval = 60) throws -> ProcessResult {
    let child = try ChildProcess(executable, arguments, environment: environment)
    defer { child.removeOutputFiles() }
    guard let status = child.wait(timeout: timeout) else {
        child.kill()
        throw ProcessTimeout(command: ([executable] + arguments).joined(separator: " "), seconds: timeout)
    }
    return child.result(status: status)
}
