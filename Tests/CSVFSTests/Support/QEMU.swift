import Foundation
import Glibc
import Testing
import TestSupport

/// QEMU's tools and messages, for tests that run QEMU on images in a volume as a cluster's hypervisors would.
enum QEMU {
    static let qemuIO = "/usr/bin/qemu-io"
    static let qemuImg = "/usr/bin/qemu-img"
    /// Another process holds the permission to write (a second writer, or a VM resumed after it migrated away).
    static let writeLockRefused = "Failed to get \"write\" lock"
    /// Another process refuses to share writes, which even a reader of a qcow2 image's metadata needs.
    static let sharedWriteLockRefused = "Failed to get shared \"write\" lock"
    /// What the hypervisor tests need, and how CI gets it (the default install leaves it out: it is large).
    static let hypervisorInstall = "bash scripts/install-deps.sh --hypervisor"

    static func img(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(qemuImg, arguments, timeout: 60)
    }

    /// `qemu-io -f FORMAT -c COMMAND IMAGE`: opens the image read-write, as any writer would, for one command.
    static func io(_ image: String, format: String, _ command: String) throws -> ProcessResult {
        try runProcess(qemuIO, ["-f", format, "-c", command, image], timeout: 60)
    }

    /// `qemu-system-x86_64` on the PATH, or a failed test naming the install command: these tests must never
    /// pass by skipping.
    static func hypervisor(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
        let found = directories.map { "\($0)/qemu-system-x86_64" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        return try #require(found, "qemu-system-x86_64 is not installed: run `\(hypervisorInstall)` (as root) first",
                            sourceLocation: sourceLocation)
    }

    /// A TCP port on loopback that nobody listened on a moment ago (the kernel's pick for port 0).
    static func freePort() throws -> UInt16 {
        let fd = try sys("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = try sys("bind") {
            withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        }
        _ = try sys("getsockname") {
            withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        }
        return UInt16(bigEndian: address.sin_port)
    }
}

/// A qemu-io process that keeps an image open read-write, and its locks taken, until `finish` ends its stdin.
/// For a raw image it opens the image through a quorum of one: plain `qemu-io -f raw` shares writes (a tool's
/// open, measured: it locks only bytes 100-101), while quorum refuses to share writes to its child (bytes
/// 201 and 203 too) as a VM's disk does, so a second writer is refused.
final class QEMUImageHolder {
    let process: ChildProcess

    init(_ image: String, format: String, directory: URL) throws {
        let arguments = format == "raw"
            ? ["--image-opts", "driver=quorum,vote-threshold=1,children.0.driver=raw,children.0.file.driver=file,children.0.file.filename=\(image)"]
            : ["-f", format, image]
        process = try ChildProcess(QEMU.qemuIO, arguments, outputDirectory: directory, lifeline: true)
        // qemu-io prompts for its first command once the image is open and locked.
        let prompted = eventually { process.stdoutText.contains("qemu-io>") || !process.isRunning }
        guard prompted, process.isRunning, process.stderrText.isEmpty else {
            let why = process.stderrText
            process.kill()
            throw FixtureError("qemu-io did not hold \(image) open: \(why)")
        }
    }

    deinit { process.kill() }

    /// Closes its stdin: qemu-io closes the image and exits. Its exit status, nil if it was killed for not exiting.
    @discardableResult
    func finish(timeout: TimeInterval = 10) -> Int32? { process.finishByLifeline(timeout: timeout) }
}

/// QEMU's human monitor (HMP) over its unix socket: one command at a time, each answered up to the next
/// "(qemu) " prompt. Every read has a deadline, so a hung or dead QEMU fails the test instead of hanging it.
final class HMPMonitor {
    private let fd: Int32
    private static let prompt = Array("(qemu) ".utf8)

    /// Connects, retrying while QEMU has not created the socket yet (and is `alive`: one that exits at start,
    /// a refused image say, fails at once), and reads the greeting.
    init(socket path: String, timeout: TimeInterval = 10, alive: () -> Bool = { true }) throws {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw FixtureError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let fd = try sys("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0) }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
            }
            if connected {
                self.fd = fd
                break
            }
            let code = errno
            close(fd)
            guard Date() < deadline, alive() else { throw SyscallError(call: "connect \(path)", code: code) }
            usleep(20_000)
        }
        _ = try readToPrompt(deadline: deadline)
    }

    deinit { close(fd) }

    /// Runs one command; its answer without the monitor's echo of the command line.
    func command(_ line: String, timeout: TimeInterval = 10) throws -> String {
        try send(line)
        let text = try readToPrompt(deadline: Date().addingTimeInterval(timeout))
        // The monitor echoes the line as it is typed (with terminal escapes), ending the echo with CR LF.
        guard let echoEnd = text.range(of: "\r\n") else { return "" }
        return String(text[echoEnd.upperBound...]).replacingOccurrences(of: "\r\n", with: "\n")
    }

    /// Sends a line that gets no prompt back (`quit`).
    func send(_ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        var done = 0
        while done < bytes.count {
            let sent = try sys("send") { bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) } }
            done += sent
        }
    }

    private func readToPrompt(deadline: Date) throws -> String {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !received.ends(with: Self.prompt) {
            let remaining = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = try sys("poll") { poll(&poller, 1, remaining) }
            guard ready > 0 else {
                throw FixtureError("no QEMU monitor prompt in time; got: \(String(decoding: received, as: UTF8.self).suffix(500))")
            }
            let count = try sys("recv") { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            guard count > 0 else { throw FixtureError("QEMU closed its monitor; got: \(String(decoding: received, as: UTF8.self).suffix(500))") }
            received += chunk[0..<count]
        }
        return String(decoding: received.dropLast(Self.prompt.count), as: UTF8.self)
    }
}

private extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}

/// A VM with no guest OS, one virtio disk "d0" on an image, and a monitor: what live migration moves. Its
/// stdout is where QEMU 7.2 prints the results of HMP `qemu-io` commands.
final class QEMUMachine {
    let process: ChildProcess
    let monitor: HMPMonitor
    /// Where a destination listens for the incoming migration.
    let incomingPort: UInt16?

    /// A running VM, or with `incoming` one that waits paused for a migration on a free loopback port.
    init(image: String, format: String, incoming: Bool = false, directory: URL) throws {
        (process, monitor, incomingPort) = try Self.start(image: image, format: format, incoming: incoming, directory: directory)
    }

    private static func start(image: String, format: String, incoming: Bool, directory: URL,
                              attempts: Int = 3) throws -> (ChildProcess, HMPMonitor, UInt16?) {
        let hypervisor = try QEMU.hypervisor()
        let port = incoming ? try QEMU.freePort() : nil
        let socket = directory.appendingPathComponent("hmp-\(UUID().uuidString.prefix(8)).sock").path
        var arguments = ["-machine", "q35,accel=tcg", "-m", "64", "-nodefaults", "-display", "none",
                         "-drive", "if=none,id=d0,file=\(image),format=\(format),cache=none",
                         "-device", "virtio-blk-pci,drive=d0", "-monitor", "unix:\(socket),server=on,wait=off"]
        if let port { arguments += ["-incoming", "tcp:127.0.0.1:\(port)"] }
        let process = try ChildProcess(hypervisor, arguments, outputDirectory: directory)
        do {
            return (process, try HMPMonitor(socket: socket, alive: { process.isRunning }), port)
        } catch {
            process.kill()
            // Another process may have taken the port between our pick and QEMU's bind.
            if incoming && attempts > 1 && process.stderrText.contains("Address already in use") {
                return try start(image: image, format: format, incoming: incoming, directory: directory, attempts: attempts - 1)
            }
            throw FixtureError("QEMU did not start on \(image): \(error); stderr: \(process.stderrText)")
        }
    }

    deinit { stop() }

    /// SIGTERM (QEMU closes its images cleanly), SIGKILL if that takes too long.
    func stop() { process.stop(timeout: 10) }

    /// `info status`: "running", "paused (inmigrate)", "paused (postmigrate)".
    func status() throws -> String {
        try monitor.command("info status").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// HMP `qemu-io d0 "COMMAND"`: disk I/O from inside the VM. What it printed on QEMU's stdout, once it has
    /// printed its result line ("wrote ..." or "read ..."), and the monitor's answer (where errors go).
    func qemuIO(_ command: String) throws -> String {
        let before = process.stdoutText.utf8.count
        let answer = try monitor.command("qemu-io d0 \"\(command)\"")
        var printed = ""
        _ = eventually(5) {
            printed = String(decoding: process.stdoutText.utf8.dropFirst(before), as: UTF8.self)
            return printed.split(separator: "\n").contains { $0.hasPrefix("wrote ") || $0.hasPrefix("read ") }
        }
        return answer + printed
    }

    /// Migrates to `destination` and waits for it to complete; the total time QEMU reports, in ms.
    func migrate(to destination: QEMUMachine, timeout: TimeInterval = 60) throws -> Int {
        let port = try #require(destination.incomingPort, "the destination waits for no migration")
        let started = try monitor.command("migrate -d tcp:127.0.0.1:\(port)")
        #expect(!started.contains("Error"), "\(started)")
        var info = ""
        let completed = try eventually(timeout) {
            info = try monitor.command("info migrate")
            return info.contains("Migration status: completed") || info.contains("Migration status: failed")
        }
        guard completed, info.contains("Migration status: completed") else {
            throw FixtureError("migration did not complete within \(Int(timeout)) s: \(info)\nsource stderr: \(process.stderrText)\ndestination stderr: \(destination.process.stderrText)")
        }
        let total = info.split(separator: "\n").first { $0.hasPrefix("total time: ") }
        return total.flatMap { Int($0.dropFirst("total time: ".count).split(separator: " ")[0]) } ?? -1
    }
}
