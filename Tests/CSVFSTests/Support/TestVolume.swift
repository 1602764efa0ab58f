import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// A freshly formatted LUN image in a unique temp dir, mountable at a unique mountpoint there.
/// The serving process is started by the test (`csvfs mount --foreground`), so its PID is known.
final class TestVolume {
    let directory: URL
    let lun: String
    let mountpoint: String
    let binary: String
    private(set) var server: ChildProcess?

    static let mountTimeout: TimeInterval = 30
    static let commandTimeout: TimeInterval = 120

    /// A volume on a new image file of `size`.
    convenience init(size: String = "512M") throws {
        try self.init(lun: nil, formatArguments: ["--size", size])
    }

    /// A volume on `device` (a block device the test set up), formatted over whatever it holds.
    convenience init(device: String) throws {
        try self.init(lun: device, formatArguments: ["--force"])
    }

    private init(lun device: String?, formatArguments: [String]) throws {
        binary = try CSVFSBinary.path()
        var template = Array(FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-test-XXXXXX").path.utf8CString)
        guard let created = mkdtemp(&template) else { throw FixtureError("mkdtemp: \(String(cString: strerror(errno)))") }
        directory = URL(fileURLWithPath: String(cString: created))
        // Others must be able to walk to the mountpoint (the permission tests run as nobody).
        chmod(directory.path, 0o755)
        lun = device ?? directory.appendingPathComponent("lun.img").path
        mountpoint = directory.appendingPathComponent("mnt").path
        do {
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: false)
            let format = try csvfs(["format", lun] + formatArguments)
            guard format.succeeded else { throw FixtureError("csvfs format failed: \(format)") }
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    func path(_ relative: String) -> String { mountpoint + "/" + relative }

    /// Runs `csvfs ARGS` to completion (with a timeout).
    func csvfs(_ arguments: [String], timeout: TimeInterval = commandTimeout) throws -> ProcessResult {
        try runProcess(binary, arguments, timeout: timeout)
    }

    func fsck() throws -> ProcessResult { try csvfs(["fsck", lun]) }

    var isMounted: Bool { MountTable.isMounted(mountpoint) }

    /// Starts the server in the foreground as our child and waits until the kernel lists the mount.
    func mount() throws {
        guard server == nil else { throw FixtureError("already mounted by this fixture") }
        let child = try ChildProcess(binary, ["mount", lun, mountpoint, "--foreground"], outputDirectory: directory)
        server = child
        let deadline = Date().addingTimeInterval(Self.mountTimeout)
        while MountTable.entry(at: mountpoint)?.fileSystemType != "fuse.csvfs" {
            if let status = child.wait(timeout: 0) {
                server = nil
                throw FixtureError("csvfs mount exited before the mount was ready: \(child.result(status: status))")
            }
            if Date() > deadline {
                throw FixtureError("mount not ready within \(Int(Self.mountTimeout)) s: \(child.stderrText)")
            }
            usleep(10_000)
        }
    }

    /// `csvfs unmount`, then waits for our server to exit; throws if either fails.
    func unmount() throws {
        let result = try csvfs(["unmount", mountpoint])
        guard result.succeeded else { throw FixtureError("csvfs unmount failed: \(result)") }
        if let server {
            guard let status = server.wait(timeout: Self.mountTimeout) else {
                throw FixtureError("server still running \(Int(Self.mountTimeout)) s after unmount")
            }
            self.server = nil
            guard status == 0 else { throw FixtureError("server exited with \(status) after unmount: \(server.stderrText)") }
        }
    }

    func remount() throws {
        try unmount()
        try mount()
    }

    /// Simulates a crash: SIGKILL the server by PID, then detach the dead mount.
    func crash() throws {
        guard let server else { throw FixtureError("no server to kill") }
        server.kill()
        self.server = nil
        try detachDeadMount()
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
        guard isMounted else { return }
        let result = try? runProcess("/usr/bin/fusermount3", ["-u", "-z", mountpoint], timeout: 30)
        if isMounted { _ = umount2(mountpoint, Int32(MNT_DETACH)) }
        if isMounted { throw FixtureError("cannot detach \(mountpoint): \(result.map(\.description) ?? "fusermount3 failed")") }
    }

    /// Teardown: unmount (gracefully, else kill the server by PID and detach), check the volume with fsck
    /// when asked, then remove the temp dir.
    func destroy(checkVolume: Bool) {
        var unmountedCleanly = true
        if isMounted || server != nil {
            do { try unmount() } catch {
                unmountedCleanly = false
                Issue.record("teardown: \(error)")
            }
        }
        if checkVolume && unmountedCleanly && !isMounted {
            do {
                let fsck = try self.fsck()
                if !fsck.succeeded { Issue.record("teardown: fsck of the volume the test left: \(fsck)") }
            } catch {
                Issue.record("teardown: fsck: \(error)")
            }
        }
        if let server {
            server.kill()
            self.server = nil
        }
        if isMounted {
            // A server we did not start ourselves (`csvfs mount` in the background): find it by our unique LUN path.
            for pid in processIDs(withArgument: lun) { kill(pid, SIGKILL) }
            try? detachDeadMount()
        }
        for pid in processIDs(withArgument: lun) { kill(pid, SIGKILL) }
        guard !isMounted else {
            Issue.record("teardown: \(mountpoint) is still mounted; leaving \(directory.path) in place")
            return
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Formats a volume, mounts it, runs `body`, and always unmounts and removes everything afterwards.
/// Unless `fsckAtTeardown` is false (tests that corrupt the LUN on purpose), the volume the test left
/// must pass `csvfs fsck`.
func withVolume<T>(size: String = "512M", mounted: Bool = true, fsckAtTeardown: Bool = true,
                   _ body: (TestVolume) throws -> T) throws -> T {
    let volume = try TestVolume(size: size)
    defer { volume.destroy(checkVolume: fsckAtTeardown) }
    if mounted { try volume.mount() }
    return try body(volume)
}
