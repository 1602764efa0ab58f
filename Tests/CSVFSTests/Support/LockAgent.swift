import Foundation
import Glibc
import TestSupport

/// A process that takes file locks on one file through a mount, one step after another, as any program does:
/// a Python script calling fcntl (POSIX and OFD locks) and flock. Each step's outcome is a line of its stdout,
/// read by `answer`; "hold" keeps the file open until `finish`, which ends its stdin.
///
/// Steps: `lock KIND TYPE START LEN` (non-blocking), `lockw ...` (blocking), `getlk KIND TYPE START LEN`
/// (answers "U", or "TYPE START LEN PID" of the lock in the way), with KIND posix, ofd or flock (flock ignores the
/// range) and TYPE R, W or U; `alarm SECONDS` (a SIGALRM whose handler interrupts the blocked call: EINTR);
/// `wait PATH` (until the file exists); `close`; `hold`. A failed step answers its errno's name.
final class LockAgent {
    let process: ChildProcess
    let steps: [String]

    init(_ path: String, _ steps: [String], directory: URL) throws {
        let script = directory.appendingPathComponent("lock-agent.py").path
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        process = try ChildProcess("/usr/bin/env", ["python3", script, path] + steps, outputDirectory: directory, lifeline: true)
        self.steps = steps
    }

    deinit { process.kill() }

    /// The outcome of step `index`, once it has one, or nil if none came within `timeout`.
    func answer(_ index: Int, timeout: TimeInterval = 10) -> String? {
        let prefix = "\(index) \(steps[index]): "
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            let text = process.stdoutText
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) {
                return String(line.dropFirst(prefix.count))
            }
            if !process.isRunning { break }
            usleep(10_000)
        } while Date() < deadline
        let text = process.stdoutText
        return text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }).map { String($0.dropFirst(prefix.count)) }
    }

    /// Ends the hold: the agent exits, closing the file. Its exit status, nil if it did not exit in time (killed).
    @discardableResult
    func finish(timeout: TimeInterval = 10) -> Int32? { process.finishByLifeline(timeout: timeout) }

    var errors: String { process.stderrText }

    private static let script = #"""
    import errno, fcntl, os, signal, struct, sys, time

    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm()

    signal.signal(signal.SIGALRM, on_alarm)
    COMMANDS = {"posix": (fcntl.F_SETLK, fcntl.F_SETLKW, fcntl.F_GETLK),
                "ofd": (fcntl.F_OFD_SETLK, fcntl.F_OFD_SETLKW, fcntl.F_OFD_GETLK)}
    TYPES = {"R": fcntl.F_RDLCK, "W": fcntl.F_WRLCK, "U": fcntl.F_UNLCK}
    NAMES = {fcntl.F_RDLCK: "R", fcntl.F_WRLCK: "W", fcntl.F_UNLCK: "U"}
    FLOCKS = {"R": fcntl.LOCK_SH, "W": fcntl.LOCK_EX, "U": fcntl.LOCK_UN}
    LAYOUT = "hhqqi4x"
    # errno.errorcode names EDEADLK by its alias EDEADLOCK.
    ERRORS = {errno.EDEADLK: "EDEADLK", errno.EAGAIN: "EAGAIN"}

    fd = os.open(sys.argv[1], os.O_RDWR)
    for index, step in enumerate(sys.argv[2:]):
        def say(text):
            print(f"{index} {step}: {text}", flush=True)
        words = step.split()
        try:
            if words[0] in ("lock", "lockw", "getlk") and words[1] == "flock":
                fcntl.flock(fd, FLOCKS[words[2]] | (0 if words[0] == "lockw" else fcntl.LOCK_NB))
                say("ok")
            elif words[0] in ("lock", "lockw", "getlk"):
                command = COMMANDS[words[1]][("lock", "lockw", "getlk").index(words[0])]
                request = struct.pack(LAYOUT, TYPES[words[2]], os.SEEK_SET, int(words[3]), int(words[4]), 0)
                answer = fcntl.fcntl(fd, command, request)
                if words[0] == "getlk":
                    kind, _, start, length, pid = struct.unpack(LAYOUT, answer)
                    say("U" if kind == fcntl.F_UNLCK else f"{NAMES[kind]} {start} {length} {pid}")
                else:
                    say("ok")
            elif words[0] == "alarm":
                signal.alarm(int(words[1]))
                say("ok")
            elif words[0] == "wait":
                while not os.path.exists(words[1]):
                    time.sleep(0.01)
                say("ok")
            elif words[0] == "close":
                os.close(fd)
                say("ok")
            elif words[0] == "hold":
                say("holding")
                sys.stdin.read()
            else:
                say("unknown step")
        except Alarm:
            say("EINTR")
        except OSError as error:
            say(ERRORS.get(error.errno) or errno.errorcode.get(error.errno, str(error.errno)))
    """#
}
