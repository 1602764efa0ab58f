import ArgumentParser
import CSVFS
import Foundation
import Glibc
import Logging

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount a CSVFS volume through FUSE.",
        discussion: "Without --foreground, returns once the mount is ready; the volume is served in the background.")

    @Argument(help: "The LUN holding the volume.")
    var lun: String

    @Argument(help: "An existing directory to mount on.")
    var mountpoint: String

    @Flag(help: "Serve in this process until unmounted (logs go to standard error).")
    var foreground = false

    @Option(name: .short, help: "Mount options, comma-separated: FUSE's (e.g. ro), and io=aio (default) or io=threads for how file data moves to and from the LUN.")
    var options: String?

    @Option(help: "Append the background server's log to this file.")
    var log: String?

    @Option(help: .hidden)
    var readyFD: Int32?

    /// For tests: `loopback` serves FUSE and the data path through the metadata RPC (codec, server) in this
    /// process, as a node that is not the coordinator will be served.
    @Option(help: .hidden)
    var metadataRPC: String?

    func run() throws {
        do {
            try FUSESession.checkMountpoint(mountpoint)
        } catch {
            throw Failure("csvfs mount: \(error)")
        }
        _ = try Self.splitOptions(options)
        _ = try metadataRoute()
        if foreground {
            try serve()
        } else {
            try Daemon.start(arguments: ["mount", lun, mountpoint, "--foreground"]
                             + (options.map { ["-o", $0] } ?? []) + (metadataRPC.map { ["--metadata-rpc", $0] } ?? []),
                             log: log)
        }
    }

    private func metadataRoute() throws -> MetadataRoute {
        switch metadataRPC {
        case nil: return .direct
        case "loopback": return .loopbackRPC
        case let other?: throw Failure("csvfs mount: --metadata-rpc \(other): the only transport is 'loopback'")
        }
    }

    private func serve() throws {
        var logger = Logger(label: "csvfs")
        logger.logLevel = .info
        let report = ReadyPipe(fd: readyFD)
        let (io, extra) = try Self.splitOptions(options)
        let volume: Volume
        do {
            volume = try Volume.open(path: lun, io: io, metadataRoute: try metadataRoute())
        } catch {
            let message = "csvfs mount: \(lun): \(error)"
            report.fail(message)
            throw Failure(message)
        }
        defer { volume.close() }
        if volume.usedBackupSuperblock {
            logger.warning("primary superblock unreadable; mounted from the backup copy (run csvfs fsck --repair)")
        }
        do {
            try FUSESession.serve(volume: volume, lunPath: lun, mountpoint: mountpoint, options: extra, logger: logger) {
                report.ready()
            }
            if let remote = volume.remote { logger.info("metadata RPCs: \(remote.counters)") }
        } catch {
            let message = "csvfs mount: \(error)"
            report.fail(message)
            throw Failure(message)
        }
    }
}

extension Mount {
    /// The `io=` option, taken out of the options for FUSE.
    static func splitOptions(_ options: String?) throws -> (io: LUNIOMode, fuse: [String]) {
        var io = LUNIOMode.aio
        var fuse: [String] = []
        for option in options?.split(separator: ",").map(String.init) ?? [] {
            guard option.hasPrefix("io=") else {
                fuse.append(option)
                continue
            }
            let value = String(option.dropFirst(3))
            guard let mode = LUNIOMode(rawValue: value) else {
                throw Failure("csvfs mount: -o \(option): io is one of \(LUNIOMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            io = mode
        }
        return (io, fuse)
    }
}

/// The channel through which a background server tells `csvfs mount` that the mount is ready, or why not.
struct ReadyPipe: Sendable {
    let fd: Int32?

    func ready() { send("ready\n") }
    func fail(_ message: String) { send("error: \(message)\n") }

    private func send(_ text: String) {
        guard let fd else { return }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }
}

/// `mount.csvfs LUN DIR [-sfnv] [-o OPTIONS]` as mount(8) calls it, into `csvfs mount` arguments.
enum MountHelper {
    /// Options that mount(8) and fstab use but FUSE does not take.
    static let dropped: Set<String> = ["defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "rw"]

    static func translate(_ arguments: [String]) -> [String] {
        var positional: [String] = []
        var options: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "-o", index + 1 < arguments.count {
                options += arguments[index + 1].split(separator: ",").map(String.init)
                index += 2
                continue
            }
            if !argument.hasPrefix("-") { positional.append(argument) }
            index += 1
        }
        let kept = options.filter { !dropped.contains($0) && !$0.hasPrefix("x-") && !$0.hasPrefix("comment=") }
        return positional + (kept.isEmpty ? [] : ["-o", kept.joined(separator: ",")])
    }
}
