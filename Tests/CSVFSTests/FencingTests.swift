import ClusterTestSupport
import CSVFS
import Foundation
import Glibc
import Primitives
import Testing
import TestSupport

/// Fencing (issue 10) with real parts: etcd-backed nodes, real mounts, a node cut off by taking its host's
/// link down, a coordinator stopped past its lease. A node writes to the LUN only while its lease is valid,
/// and stops before the lease could be given to anyone else; an old coordinator that wakes up writes nothing.
extension Mounted {
    @Suite(.serialized) struct FencingTests {
        /// A short lease, so a test waits seconds for a lapse; an I/O timeout above a failover's length.
        static let ioTimeout = 10.0
        static let options = ["lease_ttl=2", "io_timeout=\(Int(ioTimeout))"]
        static let blocks = 64
        static let blockSize = 4096

        enum Cut: String, CustomTestStringConvertible {
            case follower, coordinator
            var testDescription: String { rawValue }
        }

        /// The other side writes a file the cut node was writing, as soon as the node is cut: its writes wait for
        /// the cut node's lock (or a new coordinator), which comes only after the cut node's lease lapsed.
        @Test(arguments: [Cut.follower, .coordinator]) func aCutOffNodeFencesItselfBeforeTheOtherSideWrites(_ cut: Cut) throws {
            try withVolume(mounted: false) { volume in
                let network = try TestNetwork(subnet: "10.78.\(getpid() % 200 + 20)")
                let nodes = NetworkNodes(volume: volume, network: network)
                defer { nodes.stop() }
                let etcdHost = try network.addHost(100)
                let hosts = try (1...2).map { try network.addHost($0) }
                nodes.etcd = try EtcdServer(on: etcdHost, network: network)
                for (index, host) in hosts.enumerated() { try nodes.start(on: host, name: "host\(index + 1)") }
                let (cutIndex, otherIndex) = cut == .coordinator ? (0, 1) : (1, 0)
                let servers = nodes.servers
                let cutPath = nodes.mountpoints[cutIndex] + "/shared", otherPath = nodes.mountpoints[otherIndex] + "/shared"

                // The cut node makes the file and writes it whole: its blocks allocated and written, its map
                // cached under its lock, so its later writes go straight to the LUN.
                try writeFile(cutPath, (0..<Self.blocks).flatMap { Self.block("A", $0, generation: 0) }, fsync: true)
                let physical = try #require(try Self.find(Self.marker("A", 0), in: volume.lun), "block 0 of the file on the LUN")
                let writer = BlockWriter(path: cutPath, side: "A")
                writer.start()
                defer { writer.stop() }
                #expect(eventually(10) { writer.succeeded > Self.blocks }, "the cut node writes before the cut")

                let cutAt = unixNow()
                try network.cut(hosts[cutIndex])
                let watch = LUNWatch(lun: volume.lun, offset: physical, marker: Self.marker("B", 0))
                watch.start()
                defer { watch.stop() }
                let otherDone = try Self.writeWhole(otherPath, side: "B", generation: 1, within: 60)
                #expect(eventually(5) { watch.firstSeen != nil }, "the other side's first block reached the LUN")
                let otherFirstWrite = try #require(watch.firstSeen)
                #expect(eventually(5) { Self.fencedAt(in: servers[cutIndex].stderrText) != nil },
                        "the cut node says it fenced itself: \(servers[cutIndex].stderrText.suffix(2000))")
                let fencedAt = try #require(Self.fencedAt(in: servers[cutIndex].stderrText))
                #expect(fencedAt > cutAt, "fenced because of the cut (at \(fencedAt), cut at \(cutAt))")
                #expect(fencedAt < otherFirstWrite, "fenced at \(fencedAt), before the other side's first write at \(otherFirstWrite)")

                // The cut node was still writing at its deadline (a try after it, or one still waiting then, which
                // would land after the other side's if the fence let it); none of those may land.
                #expect(writer.attempts.contains { $0.start > fencedAt || $0.errno == -1 },
                        "the cut node was writing past its deadline: \(writer.attempts.suffix(3)) of \(writer.attempts.count)")

                // The cut node's applications: a pause that ends the I/O timeout after the fence, with EIO, and from
                // then on EIO at once (each call waiting a whole timeout of its own would stall them without end).
                let paused = TimedCall { [cutPath] in statErrno(cutPath) }
                #expect(eventually(fencedAt + Self.ioTimeout + 3 - unixNow()) { paused.outcome != nil },
                        "a stat on the cut node ends within the I/O timeout of its fence")
                if let (failure, endedAt) = paused.outcome {
                    #expect(failure == EIO, "a stat on the cut node during the pause: \(errnoName(failure))")
                    #expect(endedAt < fencedAt + Self.ioTimeout + 1, "the pause ended at \(endedAt - fencedAt) s after the fence")
                }
                while unixNow() < fencedAt + Self.ioTimeout + 0.1 { usleep(50_000) }
                let lateCalls: [(String, @Sendable () -> Int32)] = [
                    ("stat", { [cutPath] in statErrno(cutPath) }),
                    ("create", { [cutPath] in openErrno(cutPath + "-new", O_CREAT | O_WRONLY, 0o644) }),
                ]
                for (name, call) in lateCalls {
                    let late = TimedCall(call)
                    #expect(eventually(3) { late.outcome != nil }, "\(name) on the cut node past the pause answers at once")
                    #expect(late.outcome?.errno == EIO, "\(name) on the cut node past the pause: \(late.outcome.map { errnoName($0.errno) } ?? "no answer")")
                }
                try network.heal(hosts[cutIndex])
                sleep(2)
                writer.stop()
                // A try still waiting in the cut node when it is stopped below is no write: it never reached the LUN.
                let late = writer.attempts.filter { $0.errno == 0 && $0.start > fencedAt }
                #expect(late.isEmpty, "\(late.count) writes of the cut node succeeded after it fenced itself")
                let content = try readFile(otherPath)
                let expected = (0..<Self.blocks).flatMap { Self.block("B", $0, generation: 1) }
                let stale = (0..<Self.blocks).filter { Array(content[($0 * Self.blockSize)..<(($0 + 1) * Self.blockSize)]) != Array(expected[($0 * Self.blockSize)..<(($0 + 1) * Self.blockSize)]) }
                #expect(content.count == expected.count && stale.isEmpty, "blocks not the other side's after healing: \(stale)")
                #expect(try Self.read(volume.lun, at: physical) == Self.block("B", 0, generation: 1), "block 0 on the LUN")
                servers[cutIndex].kill()
                let unmounted = try volume.csvfs(["unmount", nodes.mountpoints[otherIndex]], timeout: 60)
                #expect(unmounted.succeeded, "\(unmounted)")
                nodes.stop()
                #expect(writer.join(), "the cut node's writer ended with its node")
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
            }
        }

        /// The coordinator is stopped past its lease; the other node takes over and writes; the old one is let
        /// go on, with an application of its host waiting on it, and must add nothing to its record of LUN writes.
        @Test func aCoordinatorStoppedPastItsLeaseWritesNothingAfterItWakes() async throws {
            let etcd = try await EtcdServer()
            defer { etcd.stop() }
            try withVolume(mounted: false) { volume in
                let log = volume.directory.appendingPathComponent("node1-lun-writes.log").path
                var servers: [ChildProcess] = []
                var mountpoints: [String] = []
                var stopped: ChildProcess?
                func stopNodes() {
                    if let node = stopped { kill(node.pid, SIGCONT) }
                    stopped = nil
                    for mountpoint in mountpoints.dropFirst() where MountTable.isMounted(mountpoint) { _ = try? volume.csvfs(["unmount", mountpoint], timeout: 60) }
                    for server in servers { server.kill() }
                    for mountpoint in mountpoints where MountTable.isMounted(mountpoint) {
                        _ = try? runProcess("/usr/bin/fusermount3", ["-u", "-z", mountpoint], timeout: 30)
                    }
                }
                defer { stopNodes() }
                for index in 1...2 {
                    let mountpoint = volume.directory.appendingPathComponent("node\(index)").path
                    try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: false)
                    mountpoints.append(mountpoint)
                    servers.append(try volume.startNode(at: mountpoint, arguments: ["--etcd", etcd.endpoint], options: Self.options,
                                                        environment: index == 1 ? ["CSVFS_RECORD_LUN_WRITES": log] : [:]))
                }
                let (old, new) = (servers[0], servers[1])
                #expect(old.stderrText.contains("epoch stamped on the volume"), "node 1 is the coordinator: \(old.stderrText)")
                for index in 0..<4 { try writeFile(mountpoints[0] + "/before-\(index)", patternBytes(count: 20_000, seed: UInt64(index)), fsync: true) }
                try writeFile(mountpoints[1] + "/from-2", patternBytes(count: 20_000, seed: 50), fsync: true)
                // Its once-a-second commit and sync have nothing left to do.
                usleep(1_500_000)

                #expect(kill(old.pid, SIGSTOP) == 0)
                stopped = old
                #expect(eventually(30) { new.stderrText.contains("epoch stamped on the volume") },
                        "node 2 takes over once node 1's lease lapsed: \(new.stderrText.suffix(2000))")
                let newEpoch = try #require(Self.stampedEpoch(in: new.stderrText))
                for index in 0..<4 { try writeFile(mountpoints[1] + "/after-\(index)", patternBytes(count: 30_000, seed: UInt64(100 + index)), fsync: true) }
                try writeFile(mountpoints[1] + "/before-0", patternBytes(count: 10_000, seed: 200), fsync: true)
                let recorded = try Self.writes(in: log)

                // Applications of node 1's host ask while it sleeps and are served once it wakes.
                let stale = StaleCalls(mountpoint: mountpoints[0])
                stale.start()
                usleep(200_000)
                #expect(kill(old.pid, SIGCONT) == 0)
                stopped = nil
                // The pause of a fenced node ends the I/O timeout after its fence (its lease lapsed while it slept).
                #expect(eventually(Self.ioTimeout + 3) { stale.results.count == 2 }, "node 1's calls answer within the I/O timeout")
                sleep(1)
                let after = try Self.writes(in: log)
                #expect(after.count == recorded.count && after == recorded,
                        "node 1 wrote \(after.count - recorded.count) times to the LUN after it woke: \(after.dropFirst(recorded.count).prefix(3))")
                #expect(old.stderrText.contains("fenced: lease lapsed at"), "\(old.stderrText.suffix(2000))")
                #expect(stale.results.count == 2 && stale.results.allSatisfy { $0 == EIO }, "node 1's calls after it woke fail with EIO: \(stale.results)")
                for index in 0..<4 { #expect(try readFile(mountpoints[1] + "/after-\(index)") == patternBytes(count: 30_000, seed: UInt64(100 + index))) }

                stopNodes()
                servers = []
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "\(fsck)")
                let info = try volume.csvfs(["info", volume.lun])
                #expect(info.stdout.contains("epoch:       \(newEpoch)"), "the volume names node 2's epoch \(newEpoch): \(info.stdout)")
                try volume.mount()
                for index in 0..<4 { #expect(try readFile(volume.path("after-\(index)")) == patternBytes(count: 30_000, seed: UInt64(100 + index))) }
                #expect(try readFile(volume.path("before-0")) == patternBytes(count: 10_000, seed: 200))
                #expect(try readFile(volume.path("before-1")) == patternBytes(count: 20_000, seed: 1), "node 1's stale write did not land")
                #expect(!FileManager.default.fileExists(atPath: volume.path("stale")), "node 1's stale create did not land")
                try volume.unmount()
            }
        }

        // MARK: helpers

        /// Block `index` of `side`'s writes: a header a scan of the LUN finds, then the side's letter.
        static func block(_ side: Character, _ index: Int, generation: Int) -> [UInt8] {
            var bytes = Array(marker(side, index).utf8) + Array(String(format: "%08d\n", generation).utf8)
            bytes += [UInt8](repeating: side.asciiValue!, count: blockSize - bytes.count)
            return bytes
        }

        static func marker(_ side: Character, _ index: Int) -> String { "FENCE-\(side)-\(String(format: "%04d", index))-" }

        /// Where a block starting with `marker` sits on the LUN, looking at block boundaries only.
        static func find(_ marker: String, in lun: String) throws -> Int64? {
            let fd = try sys("open \(lun)") { open(lun, O_RDONLY) }
            defer { close(fd) }
            let needle = Array(marker.utf8)
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            var offset: Int64 = 0
            while true {
                let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
                guard n > 0 else { return nil }
                for start in stride(from: 0, to: n - needle.count, by: blockSize) where chunk[start..<(start + needle.count)].elementsEqual(needle) {
                    return offset + Int64(start)
                }
                offset += Int64(n)
            }
        }

        static func read(_ lun: String, at offset: Int64) throws -> [UInt8] {
            let fd = try sys("open \(lun)") { open(lun, O_RDONLY) }
            defer { close(fd) }
            var bytes = [UInt8](repeating: 0, count: blockSize)
            _ = try sys("pread") { bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) } }
            return bytes
        }

        /// Writes the whole file as `side`, block by block, then fsyncs; returns when it ended (Unix time).
        static func writeWhole(_ path: String, side: Character, generation: Int, within timeout: TimeInterval) throws -> Double {
            let outcome = Primitives.Locked<Result<Double, SyscallError>?>(nil)
            let thread = Thread {
                let result = Result { () throws(SyscallError) -> Double in
                    let fd = try sysTyped("open \(path)") { open(path, O_WRONLY) }
                    defer { close(fd) }
                    for index in 0..<blocks {
                        let bytes = block(side, index, generation: generation)
                        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(index * blockSize)) }
                        if n != blockSize { throw SyscallError(call: "pwrite block \(index)", code: n < 0 ? errno : EIO) }
                    }
                    _ = try sysTyped("fsync") { fsync(fd) }
                    return unixNow()
                }
                outcome.withLock { $0 = result }
            }
            thread.start()
            guard eventually(timeout, { outcome.withLock { $0 } != nil }) else {
                throw FixtureError("writing \(path) did not end within \(Int(timeout)) s")
            }
            return try outcome.withLock { $0 }!.get()
        }

        /// The wall-clock time the fence's line names ("fenced: lease lapsed at T (Unix time)").
        static func fencedAt(in log: String) -> Double? {
            guard let range = log.range(of: "fenced: lease lapsed at ") else { return nil }
            return Double(log[range.upperBound...].prefix { $0 != " " })
        }

        static func stampedEpoch(in log: String) -> UInt64? {
            guard let line = log.split(separator: "\n").last(where: { $0.contains("epoch stamped on the volume") }),
                  let range = line.range(of: "coordinator for epoch ") else { return nil }
            return UInt64(line[range.upperBound...].prefix { $0.isNumber })
        }

        static func writes(in log: String) throws -> [LUNWriteLog.Record] {
            try LUNWriteLog.read(path: log).map(\.record).filter { if case .write = $0 { true } else { false } }
        }
    }
}

func unixNow() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

private func sysTyped(_ name: String, _ call: () -> Int32) throws(SyscallError) -> Int32 {
    let result = call()
    if result == -1 { throw SyscallError(call: name, code: errno) }
    return result
}

/// Nodes on hosts of a test network, through its etcd; `stop` kills them by PID and detaches their mounts.
private final class NetworkNodes {
    let volume: TestVolume
    let network: TestNetwork
    var etcd: EtcdServer?
    private(set) var servers: [ChildProcess] = []
    private(set) var mountpoints: [String] = []

    init(volume: TestVolume, network: TestNetwork) {
        self.volume = volume
        self.network = network
    }

    func start(on host: TestNetwork.Host, name: String) throws {
        guard let endpoint = etcd?.endpoint else { throw FixtureError("no etcd") }
        let mountpoint = volume.directory.appendingPathComponent(name).path
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: false)
        mountpoints.append(mountpoint)
        let server = try network.start(on: host, volume.binary,
                                       volume.withSecret(["mount", volume.lun, mountpoint, "--foreground", "--etcd", endpoint,
                                                          "-o", Mounted.FencingTests.options.joined(separator: ",")]),
                                       outputDirectory: volume.directory)
        servers.append(server)
        let deadline = Date().addingTimeInterval(60)
        while MountTable.entry(at: mountpoint)?.fileSystemType != "fuse.csvfs" {
            if let status = server.wait(timeout: 0) { throw FixtureError("\(name) exited: \(server.result(status: status))") }
            if Date() > deadline { throw FixtureError("\(name) not mounted within 60 s: \(server.stderrText)") }
            usleep(20_000)
        }
    }

    /// Kills every node (a fenced one would only refuse its last writes at unmount), detaches the mounts,
    /// stops etcd and deletes the namespaces; again is harmless.
    func stop() {
        for server in servers { server.kill() }
        for mountpoint in mountpoints where MountTable.isMounted(mountpoint) {
            _ = try? runProcess("/usr/bin/fusermount3", ["-u", "-z", mountpoint], timeout: 30)
        }
        etcd?.stop()
        etcd = nil
        network.destroy()
    }
}

/// One writer of a file, block after block, round after round, noting each try: when it started, its errno.
private final class BlockWriter: Sendable {
    struct Attempt: Sendable {
        var start: Double
        var errno: Int32
    }
    let path: String
    let side: Character
    private struct State {
        var attempts: [Attempt] = []
        var stopping = false
        var done = false
    }
    private let state = Primitives.Locked(State())

    init(path: String, side: Character) {
        self.path = path
        self.side = side
    }

    var attempts: [Attempt] { state.withLock { $0.attempts } }
    var succeeded: Int { state.withLock { $0.attempts.filter { $0.errno == 0 }.count } }

    func start() {
        Thread { [self] in
            let fd = open(path, O_WRONLY)
            defer {
                if fd >= 0 { close(fd) }
                state.withLock { $0.done = true }
            }
            guard fd >= 0 else { return }
            var generation = 1
            while !state.withLock({ $0.stopping }) {
                for index in 0..<Mounted.FencingTests.blocks {
                    let bytes = Mounted.FencingTests.block(side, index, generation: generation)
                    // Noted before the call, so a try that is still waiting counts as one.
                    let slot = state.withLock { (state) -> Int in
                        state.attempts.append(Attempt(start: unixNow(), errno: -1))
                        return state.attempts.count - 1
                    }
                    let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(index * Mounted.FencingTests.blockSize)) }
                    let failure = n == bytes.count ? 0 : (n < 0 ? errno : EIO)
                    state.withLock { $0.attempts[slot].errno = failure }
                    if failure != 0 { usleep(20_000) }
                    if state.withLock({ $0.stopping }) { break }
                }
                generation += 1
            }
        }.start()
    }

    /// Asks the writer to stop after the write it is in.
    func stop() { state.withLock { $0.stopping = true } }

    /// Waits for the writer to end (once its node is gone, a write that waited on it returns at once).
    func join() -> Bool { eventually(30) { state.withLock { $0.done } } }
}

/// Reads one block of the LUN image over and over, and notes when it first starts with `marker`.
private final class LUNWatch: Sendable {
    let lun: String
    let offset: Int64
    let marker: [UInt8]
    private struct State {
        var firstSeen: Double?
        var stopping = false
        var done = false
    }
    private let state = Primitives.Locked(State())

    init(lun: String, offset: Int64, marker: String) {
        self.lun = lun
        self.offset = offset
        self.marker = Array(marker.utf8)
    }

    var firstSeen: Double? { state.withLock { $0.firstSeen } }

    func start() {
        Thread { [self] in
            let fd = open(lun, O_RDONLY)
            defer {
                if fd >= 0 { close(fd) }
                state.withLock { $0.done = true }
            }
            var bytes = [UInt8](repeating: 0, count: 64)
            while fd >= 0, !state.withLock({ $0.stopping || $0.firstSeen != nil }) {
                let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
                let at = unixNow()
                if n >= marker.count, bytes.starts(with: marker) { state.withLock { $0.firstSeen = at } }
                usleep(500)
            }
        }.start()
    }

    func stop() {
        state.withLock { $0.stopping = true }
        _ = eventually(5) { state.withLock { $0.done } }
    }
}

/// One call on a thread of its own (answering its errno, 0 when it worked): what it answered and when.
private final class TimedCall: Sendable {
    private let result = Primitives.Locked<(errno: Int32, endedAt: Double)?>(nil)

    init(_ call: @escaping @Sendable () -> Int32) {
        Thread { [result] in
            let failure = call()
            result.withLock { $0 = (failure, unixNow()) }
        }.start()
    }

    var outcome: (errno: Int32, endedAt: Double)? { result.withLock { $0 } }
}

/// A create and an overwrite on a node's mount, each on a thread of its own; their errnos (0: it worked).
private final class StaleCalls: Sendable {
    let mountpoint: String
    private let outcomes = Primitives.Locked<[Int32]>([])

    init(mountpoint: String) { self.mountpoint = mountpoint }

    var results: [Int32] { outcomes.withLock { $0 } }

    func start() {
        Thread { [self] in
            let fd = open(mountpoint + "/stale", O_CREAT | O_EXCL | O_WRONLY, 0o644)
            let failure = fd >= 0 ? 0 : errno
            if fd >= 0 { close(fd) }
            outcomes.withLock { $0.append(failure) }
        }.start()
        Thread { [self] in
            let fd = open(mountpoint + "/before-1", O_WRONLY)
            var failure = fd >= 0 ? 0 : errno
            if fd >= 0 {
                let bytes = [UInt8](repeating: 0xEE, count: 8192)
                let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
                if n != bytes.count { failure = n < 0 ? errno : EIO } else if fsync(fd) != 0 { failure = errno }
                close(fd)
            }
            outcomes.withLock { $0.append(failure) }
        }.start()
    }
}
