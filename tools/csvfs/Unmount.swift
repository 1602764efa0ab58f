import ArgumentParser
import CSVFS
import Foundation
import Glibc

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount a CSVFS volume and wait until its server has closed the LUN.")

    @Argument(help: "The mountpoint.")
    var mountpoint: String

    @Option(help: "Seconds to wait for the server to finish.")
    var timeout: Double = 60

    func run() throws {
        let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        guard MountTable.csvfsMount(at: path) != nil else {
            throw Failure("csvfs unmount: \(mountpoint) is not a mounted CSVFS volume")
        }
        // Found before the unmount: afterwards nothing ties the server to the mountpoint any more.
        let server = Self.serverProcess(of: path)
        guard umount2(path, 0) == 0 else {
            throw Failure("csvfs unmount: \(mountpoint): \(Errno.current)")
        }
        // The server leaves the cluster, closes the database if it had it and releases the LUN after the
        // kernel lets go; wait for that. The LUN stays claimed while other nodes have it mounted, so the
        // wait is for this mount's server process.
        let deadline = Date().addingTimeInterval(timeout)
        while let server, Self.isRunning(server) {
            if Date() > deadline { throw Failure("csvfs unmount: the server of \(mountpoint) (pid \(server)) is still running after \(Int(timeout)) s") }
            usleep(20_000)
        }
    }

    /// Whether `pid` still runs: a zombie has exited already (its parent, which may be the one that started
    /// this command, reaps it later).
    static func isRunning(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    /// The `csvfs mount ... --foreground` process serving `mountpoint` (as `Daemon` starts it), by its
    /// arguments and working directory.
    static func serverProcess(of mountpoint: String) -> pid_t? {
        guard let pids = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for name in pids {
            guard let pid = pid_t(name),
                  let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let arguments = data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.count > 4, arguments[1] == "mount", arguments.contains("--foreground") else { continue }
            let served = arguments[3]
            let cwd = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) ?? "/"
            let absolute = served.hasPrefix("/") ? served : cwd + "/" + served
            if URL(fileURLWithPath: absolute).standardizedFileURL.path == mountpoint { return pid }
        }
        return nil
    }
}
