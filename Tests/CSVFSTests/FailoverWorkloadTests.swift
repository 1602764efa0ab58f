import ClusterTestSupport
import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// The coordinator SIGKILLed in the middle of a workload running on the two other nodes (creates with fsync,
/// renames, unlinks, appends with fsync, reads): the workload goes on through the failover with no error,
/// every fsync'd byte is there on both survivors, and the volume checks clean. The rounds' kill moments are
/// random (seeds printed); `CSVFS_FAILOVER_ROUNDS` sets how many (3 by default, 50 for the soak).
extension Mounted {
    @Suite struct FailoverWorkloadTests {
        static var rounds: Int { Int(ProcessInfo.processInfo.environment["CSVFS_FAILOVER_ROUNDS"] ?? "") ?? 3 }

        /// One node's workload, in a directory of its own, and what it expects there.
        final class Workload: Sendable {
            struct State {
                var files: [String: [UInt8]] = [:]
                var log: [UInt8] = []
                /// When each operation ended, in the test's monotonic clock.
                var ends: [ContinuousClock.Instant] = []
                var failure: String?
                var done = false
            }

            let directory: String
            let seed: UInt64
            let state = Locked(State())
            private let stop = Locked(false)

            init(directory: String, seed: UInt64) {
                self.directory = directory
                self.seed = seed
            }

            func start() { Thread.detachNewThread { [self] in run() } }
            func finish() { stop.withLock { $0 = true } }

            /// Waits for the workload to end after `finish`; false if it did not within `timeout`.
            func joined(within timeout: Duration) -> Bool {
                let deadline = ContinuousClock.now + timeout
                while !state.withLock({ $0.done }) {
                    if ContinuousClock.now >= deadline { return false }
                    usleep(10_000)
                }
                return true
            }

            private func run() {
                var random = SeededRandom(seed: seed)
                var index = 0
                defer { state.withLock { $0.done = true } }
                while !stop.withLock({ $0 }) {
                    do {
                        try step(index, &random)
                    } catch {
                        state.withLock { $0.failure = "step \(index): \(error)" }
                        return
                    }
                    index += 1
                }
            }

            private func ended() { state.withLock { $0.ends.append(.now) } }

            private func step(_ index: Int, _ random: inout SeededRandom) throws {
                let name = "f\(index)", content = patternBytes(count: 4096 + index, seed: seed &+ UInt64(index))
                let fd = try sys("create \(name)") { open(directory + "/" + name, O_CREAT | O_EXCL | O_WRONLY, 0o644) }
                do {
                    try writeAll(fd, content, at: 0)
                    _ = try sys("fsync \(name)") { fsync(fd) }
                } catch {
                    close(fd)
                    throw error
                }
                close(fd)
                state.withLock { $0.files[name] = content }
                ended()

                let existing = state.withLock { $0.files.keys.sorted() }
                if index % 3 == 1, let victim = existing.randomElement(using: &random) {
                    let renamed = "r\(index)"
                    _ = try sys("rename \(victim)") { rename(directory + "/" + victim, directory + "/" + renamed) }
                    state.withLock { $0.files[renamed] = $0.files.removeValue(forKey: victim) }
                    ended()
                }
                if index % 5 == 2, let victim = existing.filter({ $0 != name }).randomElement(using: &random),
                   state.withLock({ $0.files[victim] != nil }) {
                    _ = try sys("unlink \(victim)") { unlink(directory + "/" + victim) }
                    state.withLock { _ = $0.files.removeValue(forKey: victim) }
                    ended()
                }

                let record = Array("record \(index)\n".utf8)
                let log = try sys("open log") { open(directory + "/log", O_CREAT | O_WRONLY | O_APPEND, 0o644) }
                do {
                    _ = try sys("append") { record.withUnsafeBytes { write(log, $0.baseAddress, $0.count) } }
                    _ = try sys("fsync log") { fsync(log) }
                } catch {
                    close(log)
                    throw error
                }
                close(log)
                state.withLock { $0.log += record }
                ended()

                if let (file, expected) = state.withLock({ $0.files.randomElement(using: &random) }) {
                    let read = try readFile(directory + "/" + file)
                    guard read == expected else { throw SyscallError(call: "read \(file): wrong bytes", code: EIO) }
                    ended()
                }
            }
        }

        /// The coordination backend the nodes join through.
        enum Backend: CustomTestStringConvertible, Sendable {
            case local
            case etcd
            var testDescription: String { self == .local ? "local" : "etcd" }
        }

        @Test(arguments: [Backend.local, .etcd]) func theSurvivorsWorkloadRunsThroughACoordinatorKill(_ backend: Backend) async throws {
            let etcd = backend == .etcd ? try await EtcdServer() : nil
            defer { etcd?.stop() }
            var pauses: [Duration] = []
            for round in 0..<Self.rounds {
                let seed = UInt64.random(in: 1...UInt64(UInt32.max))
                print("failover round \(round) (\(backend.testDescription)), seed \(seed)")
                if let pause = try Self.round(seed: seed, etcd: etcd?.endpoint) { pauses.append(pause) }
            }
            let sorted = pauses.sorted()
            if let maximum = sorted.last {
                print("failover pause (\(backend.testDescription)) over \(sorted.count) rounds: p50 \(sorted[sorted.count / 2]), max \(maximum)")
            }
        }

        /// Three nodes, mounted one after the other (so node 1 is the coordinator), each a process of ours.
        final class Nodes {
            let volume: TestVolume
            var servers: [ChildProcess] = []
            var mountpoints: [String] = []

            init(_ volume: TestVolume, etcd: String?) throws {
                self.volume = volume
                for index in 1...3 {
                    let mountpoint = volume.directory.appendingPathComponent("node\(index)").path
                    try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: false)
                    mountpoints.append(mountpoint)
                    do {
                        servers.append(try volume.startNode(at: mountpoint, arguments: etcd.map { ["--etcd", $0] } ?? []))
                    } catch {
                        stop()   // the nodes already started
                        throw error
                    }
                }
            }

            /// SIGKILL node 1 by its PID and detach its dead mount.
            func killCoordinator() {
                servers[0].kill()
                _ = umount2(mountpoints[0], Int32(MNT_DETACH))
            }

            func stop() {
                for mountpoint in mountpoints.dropFirst() where MountTable.isMounted(mountpoint) { _ = try? volume.csvfs(["unmount", mountpoint]) }
                for server in servers { server.kill() }
                for mountpoint in mountpoints where MountTable.isMounted(mountpoint) {
                    _ = try? runProcess("/usr/bin/fusermount3", ["-u", "-z", mountpoint], timeout: 30)
                }
            }
        }

        /// One round; the pause: from the kill until every survivor has completed an operation.
        static func round(seed: UInt64, etcd: String?) throws -> Duration? {
            var random = SeededRandom(seed: seed)
            var pause: Duration?
            try withVolume(mounted: false) { volume in
                let nodes = try Nodes(volume, etcd: etcd)
                defer { nodes.stop() }
                let mounts = Array(nodes.mountpoints.dropFirst())
                for (index, mount) in mounts.enumerated() { try sys("mkdir") { mkdir(mount + "/w\(index)", 0o755) } }
                let workloads = mounts.enumerated().map { Workload(directory: $1 + "/w\($0)", seed: seed &+ UInt64($0)) }
                workloads.forEach { $0.start() }
                defer {
                    workloads.forEach { $0.finish() }
                    for workload in workloads where !workload.joined(within: .seconds(90)) {
                        Issue.record("seed \(seed): the workload in \(workload.directory) did not end")
                    }
                }
                usleep(UInt32.random(in: 300_000...1_500_000, using: &random))
                let killed = ContinuousClock.now
                nodes.killCoordinator()
                // The workload goes on through the failover, then a while under the new coordinator.
                let deadline = ContinuousClock.now + .seconds(60)
                while workloads.contains(where: { workload in workload.state.withLock { $0.ends.last.map { $0 < killed + .seconds(1) } ?? true } }),
                      workloads.allSatisfy({ $0.state.withLock { $0.failure == nil } }), ContinuousClock.now < deadline {
                    usleep(20_000)
                }
                workloads.forEach { $0.finish() }
                for workload in workloads { #expect(workload.joined(within: .seconds(90)), "seed \(seed)") }
                for workload in workloads {
                    let state = workload.state.withLock { $0 }
                    #expect(state.failure == nil, "seed \(seed), \(workload.directory): \(state.failure ?? "")")
                }
                // Every fsync'd byte, through either survivor.
                for (index, workload) in workloads.enumerated() {
                    let state = workload.state.withLock { $0 }
                    for mount in mounts {
                        let directory = mount + "/w\(index)"
                        let names = Set(try FileManager.default.contentsOfDirectory(atPath: directory))
                        #expect(names == Set(state.files.keys).union(["log"]), "seed \(seed), \(directory)")
                        for (name, content) in state.files {
                            #expect(try readFile(directory + "/" + name) == content, "seed \(seed), \(directory)/\(name)")
                        }
                        #expect(try readFile(directory + "/log") == state.log, "seed \(seed), \(directory)/log")
                    }
                }
                let firstEnds = workloads.compactMap { workload in workload.state.withLock { $0.ends.first { $0 > killed } } }
                guard firstEnds.count == workloads.count, let last = firstEnds.max() else { return }
                print("seed \(seed): pause \(last - killed), \(workloads.map { $0.state.withLock { $0.ends.count } }) operations")
                pause = last - killed
            }
            return pause
        }
    }
}
