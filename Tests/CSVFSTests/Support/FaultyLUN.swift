import CSVFS
import Foundation
import TestSupport
import Glibc

/// A block device that fails chosen requests with real I/O errors, as a failing SAN LUN does.
///
/// This kernel has no device-mapper (no `error` or `flakey` target) and no nbd driver, so the device is a loop
/// device, in direct-I/O mode, over a file that nbdfuse serves from nbdkit; nbdkit's Python plugin below keeps
/// the image and fails with EIO the reads, writes or flushes named in the faults directory (a file named after
/// the operation, holding a LUN byte range or nothing for all of it). The volume sees a real block device with
/// its own page cache, and EIO comes up from below it through the kernel.
final class FaultyLUN {
    enum Operation: String { case read = "pread", write = "pwrite", flush }

    let directory: URL
    /// The loop device: the LUN to format and mount.
    private(set) var device = ""
    private let faults: URL
    private let served: String
    private var server: ChildProcess?

    static let startTimeout: TimeInterval = 30

    init(size: Int64) throws {
        var template = Array(FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-faulty-XXXXXX").path.utf8CString)
        guard let created = mkdtemp(&template) else { throw FixtureError("mkdtemp: \(String(cString: strerror(errno)))") }
        directory = URL(fileURLWithPath: String(cString: created))
        faults = directory.appendingPathComponent("faults")
        let mountpoint = directory.appendingPathComponent("nbd")
        served = mountpoint.appendingPathComponent("lun").path
        do {
            for tool in ["/usr/bin/nbdkit", "/usr/bin/nbdfuse"] where !FileManager.default.isExecutableFile(atPath: tool) {
                throw FixtureError("\(tool) is missing: run scripts/install-deps.sh (nbdkit, nbdkit-plugin-python, libnbd-bin)")
            }
            try FileManager.default.createDirectory(at: faults, withIntermediateDirectories: false)
            try FileManager.default.createDirectory(at: mountpoint, withIntermediateDirectories: false)
            let image = directory.appendingPathComponent("lun.img").path
            guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(size)) == 0 else {
                throw FixtureError("cannot create \(image)")
            }
            let plugin = directory.appendingPathComponent("faulty-lun.py")
            try Self.plugin.write(to: plugin, atomically: true, encoding: .utf8)
            server = try ChildProcess("/usr/bin/nbdfuse", [served, "--command", "/usr/bin/nbdkit", "-s", "--exit-with-parent",
                                                           "python", plugin.path, "file=\(image)", "faults=\(faults.path)"],
                                      outputDirectory: directory)
            try waitUntilServed(size: size)
            let loop = try runProcess("/usr/sbin/losetup", ["--direct-io=on", "--show", "-f", served], timeout: 30)
            guard loop.succeeded else { throw FixtureError("losetup: \(loop)") }
            device = loop.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            destroy()
            throw error
        }
    }

    private func waitUntilServed(size: Int64) throws {
        let deadline = Date().addingTimeInterval(Self.startTimeout)
        var status = stat()
        while stat(served, &status) != 0 || Int64(status.st_size) != size {
            if let server, let exit = server.wait(timeout: 0) {
                throw FixtureError("nbdfuse exited: \(server.result(status: exit))")
            }
            if Date() > deadline { throw FixtureError("nbdfuse did not serve \(served) within \(Int(Self.startTimeout)) s") }
            usleep(20_000)
        }
    }

    /// From now on, `operation` fails with EIO where it touches `range` (anywhere when nil).
    func fail(_ operation: Operation, in range: Range<Int64>? = nil) throws {
        let spec = range.map { "\($0.lowerBound) \($0.upperBound)" } ?? ""
        try spec.write(to: faults.appendingPathComponent(operation.rawValue), atomically: true, encoding: .utf8)
    }

    func heal(_ operation: Operation) {
        unlink(faults.appendingPathComponent(operation.rawValue).path)
    }

    func healAll() {
        for operation in [Operation.read, .write, .flush] { heal(operation) }
    }

    /// How many `operation` requests have failed so far.
    func failures(_ operation: Operation) -> Int {
        let log = faults.appendingPathComponent(operation.rawValue + ".failed").path
        return FileManager.default.contents(atPath: log)?.count ?? 0
    }

    /// Waits until at least `count` `operation` requests have failed; false at the deadline.
    func waitForFailures(_ operation: Operation, count: Int = 1, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while failures(operation) < count {
            if Date() > deadline { return false }
            usleep(20_000)
        }
        return true
    }

    /// The volume's layout, read from the device's superblock.
    func superblock() throws -> Superblock {
        let lun = try LUNDevice.open(device)
        defer { lun.close() }
        return try lun.superblock().0
    }

    /// Detaches the loop device, unmounts nbdfuse and waits for it (and the nbdkit it started) to exit.
    func destroy() {
        if !device.isEmpty {
            _ = try? runProcess("/usr/sbin/losetup", ["-d", device], timeout: 30)
            device = ""
        }
        if let server {
            _ = try? runProcess("/usr/bin/fusermount3", ["-u", directory.appendingPathComponent("nbd").path], timeout: 30)
            if server.wait(timeout: 10) == nil { server.kill() }
            self.server = nil
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// nbdkit's Python plugin: the image, with the faults the test asks for. Each failed request appends one
    /// byte to `<operation>.failed`, so a test can wait for a failure it cannot otherwise see.
    private static let plugin = """
        import errno
        import io
        import os

        import nbdkit

        API_VERSION = 2
        image = None
        faults = None


        def config(key, value):
            global image, faults
            if key == "file":
                image = value
            elif key == "faults":
                faults = value
            else:
                raise RuntimeError("unknown parameter " + key)


        def thread_model():
            return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS


        def open(readonly):
            return os.open(image, os.O_RDONLY if readonly else os.O_RDWR)


        def close(h):
            os.close(h)


        def get_size(h):
            return os.fstat(h).st_size


        def can_write(h):
            return True


        def can_flush(h):
            return True


        def fail_if_injected(operation, offset, count):
            try:
                with io.open(os.path.join(faults, operation)) as spec:
                    words = spec.read().split()
            except FileNotFoundError:
                return
            if words and not (offset < int(words[1]) and offset + count > int(words[0])):
                return
            with io.open(os.path.join(faults, operation + ".failed"), "a") as log:
                log.write("x")
            nbdkit.set_error(errno.EIO)
            raise OSError(errno.EIO, "injected " + operation + " error")


        def pread(h, buf, offset, flags):
            fail_if_injected("pread", offset, len(buf))
            data = os.pread(h, len(buf), offset)
            buf[:len(data)] = data
            buf[len(data):] = bytes(len(buf) - len(data))


        def pwrite(h, buf, offset, flags):
            fail_if_injected("pwrite", offset, len(buf))
            os.pwrite(h, buf, offset)


        def flush(h, flags):
            fail_if_injected("flush", 0, 1)
            os.fdatasync(h)

        """
}

/// A volume on a `FaultyLUN`, mounted; both are torn down afterwards, the volume first.
func withFaultyVolume<T>(size: Int64 = 256 << 20, _ body: (TestVolume, FaultyLUN) throws -> T) throws -> T {
    let lun = try FaultyLUN(size: size)
    defer { lun.destroy() }
    let volume = try TestVolume(device: lun.device)
    defer {
        lun.healAll()
        volume.destroy(checkVolume: true)
    }
    try volume.mount()
    return try body(volume, lun)
}
