import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// Which node of the volume's cluster the test's mount is: the mount suites run as both.
enum MetadataMode: String, CaseIterable, CustomTestStringConvertible {
    /// The first node, the coordinator: metadata calls go straight to its own database.
    case coordinator
    /// A second node, mounted after a coordinator the fixture mounts beside it: every metadata call crosses
    /// the cluster transport to the coordinator's process.
    case follower

    var testDescription: String { rawValue }
}

/// Where the tests keep a LUN's cluster secret: beside it, never in /etc/csvfs.
func secretFile(of lun: String, in directory: URL) -> String {
    directory.appendingPathComponent(URL(fileURLWithPath: lun).lastPathComponent + ".secret").path
}

/// A freshly formatted LUN image in a unique temp dir, mountable at a unique mountpoint there.
/// The serving process is started by the test (`csvfs mount --foreground`), so its PID is known.
final class TestVolume {
    let directory: URL
    let lun: String
    let mountpoint: String
    let binary: String
    let metadataMode: MetadataMode
    private(set) var server: ChildProcess?
    /// In `.follower` mode, the coordinator node, mounted at `coordinatorMountpoint` before the test's own.
    private(set) var coordinatorServer: ChildProcess?
    var coordinatorMountpoint: String { directory.appendingPathComponent("coordinator-mnt").path }
    var secretFile: String { CSVFSTests.secretFile(of: lun, in: directory) }

    static let mountTimeout: TimeInterval = 30
    static let commandTimeout: TimeInterval = 120

    /// A volume on a new image file of `size`.
    convenience init(size: String = "512M", metadataMode: MetadataMode = .coordinator) throws {
        try self.init(lun: nil, formatArguments: ["--size", size], metadataMode: metadataMode)
    }

    /// A volume on `device` (a block device the test set up), formatted over whatever it holds.
    convenience init(device: String) throws {
        try self.init(lun: device, formatArguments: ["--force"], metadataMode: .coordinator)
    }

    private init(lun device: String?, formatArguments: [String], metadataMode: MetadataMode) throws {
        binary = try CSVFSBinary.path()
        self.metadataMode = metadataMode
        var template = Array(FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-test-XXXXXX").path.utf8CString)
        guard let created = mkdtemp(&template) else { throw FixtureError("mkdtemp: \(String(cString: strerror(errno)))") }
        directory = URL(fileURLWithPath: String(cString: created))
        // Others must be able to walk to the mountpoint (the permission tests run as nobody).
        chmod(directory.path, 0o755)
        lun = device ?? directory.appendingPathComponent("lun.img").path
        mountpoint = directory.appendingPathComponent("mnt").path
        do {
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: false)
            try FileManager.default.createDirectory(atPath: coordinatorMountpoint, withIntermediateDirectories: false)
            let format = try csvfs(["format", lun] + formatArguments)
            guard format.succeeded else { throw FixtureError("csvfs format failed: \(format)") }
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    func path(_ relative: String) -> String { mountpoint + "/" + relative }

    /// Runs `csvfs ARGS` to completion (with a timeout). `format` and `mount` of a LUN get its secret file
    /// in the test's directory unless the arguments name one.
    func csvfs(_ arguments: [String], timeout: TimeInterval = commandTimeout) throws -> ProcessResult {
        try runProcess(binary, withSecret(arguments), timeout: timeout)
    }

    func withSecret(_ arguments: [String]) -> [String] {
        guard arguments.count > 1, ["format", "mount"].contains(arguments[0]), !arguments.contains("--secret-file") else { return arguments }
        return arguments + ["--secret-file", CSVFSTests.secretFile(of: arguments[1], in: directory)]
    }

    func fsck() throws -> ProcessResult { try csvfs(["fsck", lun]) }

    var isMounted: Bool { MountTable.isMounted(mountpoint) }

    /// Starts the server in the foreground as our child and waits until the kernel lists the mount; in
    /// `.follower` mode a coordinator node first. `options` go to `csvfs mount -o`; `environment` is added to the
    /// test's node's environment, `coordinatorEnvironment` to the coordinator node's.
    func mount(options: [String] = [], environment: [String: String] = [:], coordinatorEnvironment: [String: String] = [:]) throws {
        guard server == nil else { throw FixtureError("already mounted by this fixture") }
        if metadataMode == .follower && coordinatorServer == nil {
            coordinatorServer = try startNode(at: coordinatorMountpoint, options: options, environment: coordinatorEnvironment)
        }
        server = try startNode(at: mountpoint, options: options, environment: environment)
    }

    /// Starts a node of the volume in the foreground as our child, `arguments` added to its `csvfs mount`
    /// (e.g. `--etcd URL`), and waits until the kernel lists its mount. The caller stops it.
    func startNode(at target: String, arguments extra: [String] = [], options: [String] = [],
                   environment: [String: String] = [:]) throws -> ChildProcess {
        let arguments = withSecret(["mount", lun, target, "--foreground"] + extra
                                   + (options.isEmpty ? [] : ["-o", options.joined(separator: ",")]))
        let child = try ChildProcess(binary, arguments, environment: environment, outputDirectory: directory)
        let deadline = Date().addingTimeInterval(Self.mountTimeout)
        while MountTable.entry(at: target)?.fileSystemType != "fuse.csvfs" {
            if let status = child.wait(timeout: 0) {
                throw FixtureError("csvfs mount exited before the mount was ready: \(child.result(status: status))")
            }
            if Date() > deadline {
                child.kill()
                throw FixtureError("mount not ready within \(Int(Self.mountTimeout)) s: \(child.stderrText)")
            }
            usleep(10_000)
        }
        return child
    }

    /// `csvfs unmount`, then waits for our server to exit (the test's node first, then the coordinator
    /// beside it); throws if either fails.
    func unmount() throws {
        if server != nil || isMounted { try unmount(mountpoint, server, follower: metadataMode == .follower) }
        server = nil
        if let coordinator = coordinatorServer {
            try unmount(coordinatorMountpoint, coordinator, follower: false)
            coordinatorServer = nil
        }
    }

    private func unmount(_ target: String, _ child: ChildProcess?, follower: Bool) throws {
        let result = try csvfs(["unmount", target])
        guard result.succeeded else { throw FixtureError("csvfs unmount failed: \(result)") }
        if let child {
            guard let status = child.wait(timeout: Self.mountTimeout) else {
                throw FixtureError("server still running \(Int(Self.mountTimeout)) s after unmount")
            }
            guard status == 0 else { throw FixtureError("server exited with \(status) after unmount: \(child.stderrText)") }
            if follower { try Self.expectMetadataRPCs(in: child.stderrText) }
        }
    }

    /// A node reports its RPC count at unmount; none from a follower would mean it was served by its own database.
    private static func expectMetadataRPCs(in log: String) throws {
        let marker = "metadata RPCs: "
        guard let line = log.split(separator: "\n").last(where: { $0.contains(marker) }),
              let count = line.components(separatedBy: marker).last?.split(separator: " ").first.flatMap({ Int($0) }) else {
            throw FixtureError("the follower logged no RPC count: \(log)")
        }
        guard count > 0 else { throw FixtureError("the follower made no metadata RPCs: \(line)") }
    }

    func remount() throws {
        try unmount()
        try mount()
    }

    /// Simulates a crash (of the host: in `.follower` mode the coordinator too): SIGKILL the servers by PID,
    /// then detach the dead mounts.
    func crash() throws {
        guard let server else { throw FixtureError("no server to kill") }
        server.kill()
        self.server = nil
        coordinatorServer?.kill()
        coordinatorServer = nil
        try detachDeadMount()
    }

    /// In `.follower` mode: SIGKILL the coordinator node by PID and detach its dead mount; the test's node and
    /// any other go on without it.
    func killCoordinator() throws {
        guard let coordinator = coordinatorServer else { throw FixtureError("no coordinator node to kill") }
        coordinator.kill()
        coordinatorServer = nil
        if MountTable.isMounted(coordinatorMountpoint) { _ = umount2(coordinatorMountpoint, Int32(MNT_DETACH)) }
        if MountTable.isMounted(coordinatorMountpoint) { throw FixtureError("cannot detach \(coordinatorMountpoint)") }
    }

    /// Simulates a crash while unmounting: start `csvfs unmount`, SIGKILL the server `delay` µs later.
    func crashDuringUnmount(after delay: UInt32) throws {
        guard let server else { throw FixtureError("no server to kill") }
        let unmounting = try ChildProcess(binary, ["unmount", mountpoint], outputDirectory: directory)
        defer { unmounting.removeOutputFiles() }
        usleep(delay)
        server.kill()
        self.server = nil
        if unmounting.wait(timeout: Self.mountTimeout) == nil { unmounting.kill() }
        try detachDeadMount()
    }

    /// Lazily unmounts a mount whose server is gone ("Transport endpoint is not connected"): fusermount3 -u -z,
    /// else umount2(MNT_DETACH) directly (we are root).
    func detachDeadMount() throws {
        for target in [mountpoint, coordinatorMountpoint] where MountTable.isMounted(target) {
            let result = try? runProcess("/usr/bin/fusermount3", ["-u", "-z", target], timeout: 30)
            if MountTable.isMounted(target) { _ = umount2(target, Int32(MNT_DETACH)) }
            if MountTable.isMounted(target) { throw FixtureError("cannot detach \(target): \(result.map(\.description) ?? "fusermount3 failed")") }
        }
    }

    var anyMounted: Bool { isMounted || MountTable.isMounted(coordinatorMountpoint) }

    /// Teardown: unmount (gracefully, else kill the server by PID and detach), check the volume with fsck
    /// when asked, then remove the temp dir.
    func destroy(checkVolume: Bool) {
        var unmountedCleanly = true
        if isMounted || server != nil || coordinatorServer != nil {
            do { try unmount() } catch {
                unmountedCleanly = false
                Issue.record("teardown: \(error)")
            }
        }
        if checkVolume && unmountedCleanly && !anyMounted {
            do {
                let fsck = try self.fsck()
                if !fsck.succeeded { Issue.record("teardown: fsck of the volume the test left: \(fsck)") }
            } catch {
                Issue.record("teardown: fsck: \(error)")
            }
        }
        for child in [server, coordinatorServer].compactMap({ $0 }) { child.kill() }
        server = nil
        coordinatorServer = nil
        if anyMounted {
            // A server we did not start ourselves (`csvfs mount` in the background): find it by our unique LUN path.
            for pid in processIDs(withArgument: lun) { kill(pid, SIGKILL) }
            try? detachDeadMount()
        }
        for pid in processIDs(withArgument: lun) { kill(pid, SIGKILL) }
        guard !anyMounted else {
            Issue.record("teardown: \(mountpoint) or \(coordinatorMountpoint) is still mounted; leaving \(directory.path) in place")
            return
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Formats a volume, mounts it (its metadata reached as `metadataMode` says), runs `body`, and always unmounts and removes everything afterwards.
/// Unless `fsckAtTeardown` is false (tests that corrupt the LUN on purpose), the volume the test left
/// must pass `csvfs fsck`.
func withVolume<T>(_ metadataMode: MetadataMode = .coordinator, size: String = "512M", mounted: Bool = true,
                   fsckAtTeardown: Bool = true, _ body: (TestVolume) throws -> T) throws -> T {
    let volume = try TestVolume(size: size, metadataMode: metadataMode)
    defer { volume.destroy(checkVolume: fsckAtTeardown) }
    if mounted { try volume.mount() }
    return try body(volume)
}
