import CSVFS
import CSVFSSystem
import Foundation
import Glibc

/// Starts the serving process in its own session and waits until it reports the mount ready or failed.
enum Daemon {
    static let readyTimeout: TimeInterval = 60

    static func start(arguments: [String], log: String?) throws {
        var pipeFDs: [Int32] = [0, 0]
        guard csvfs_pipe_cloexec(&pipeFDs) == 0 else { throw Failure("csvfs mount: cannot create pipe: \(Errno.current)") }
        let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
        defer { close(readEnd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let output = log ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o640)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 3)  // dup2 clears close-on-exec
        // The server keeps only its standard streams and the ready pipe: an inherited descriptor would keep,
        // say, a caller's pipe open for the life of the mount.
        csvfs_spawn_close_from(&actions, 4)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, csvfs_posix_spawn_setsid_flag())

        let executable = "/proc/self/exe"
        let argv = ["csvfs"] + arguments + ["--ready-fd", "3"]
        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, cArgs, environ)
        close(writeEnd)
        guard rc == 0 else { throw Failure("csvfs mount: cannot start server: \(Errno(rc))") }

        let message = readReport(readEnd, timeout: readyTimeout)
        if message == "ready" { return }
        if message == nil {
            kill(pid, SIGTERM)
            throw Failure("csvfs mount: server did not report ready within \(Int(readyTimeout)) s")
        }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let text = message!.hasPrefix("error: ") ? String(message!.dropFirst(7)) : "server exited before the mount was ready"
        throw Failure(text.isEmpty ? "csvfs mount: server exited before the mount was ready" : text)
    }

    /// The first line the server writes, "" if it closed the pipe without a word, nil on timeout.
    private static func readReport(_ fd: Int32, timeout: TimeInterval) -> String? {
        var collected: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 512)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 200)
            if ready < 0 && errno != EINTR { return "" }
            if ready <= 0 { continue }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            collected += buffer[0..<n]
            if collected.contains(10) { break }
        }
        if Date() >= deadline && !collected.contains(10) { return nil }
        let line = collected.split(separator: 10, maxSplits: 1).first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return line
    }
}
