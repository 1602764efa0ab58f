import ArgumentParser
import Foundation
import ClusterTransport
import LockManager
import NIOPosix

/// Runs one node: it campaigns, hosts the master when elected, and optionally runs a workload
/// that takes an EX lock in a loop and logs what it holds, so tests can check mutual exclusion.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Run a DLM node.")
    @OptionGroup var backend: BackendOptions
    @Option(help: "Node id (1...256 with the local backend).") var id: UInt32
    @Option(help: "TCP port of the lock master when this node is elected (default \(LockMaster.defaultPort), outside the ephemeral range).")
    var port: Int = LockMaster.defaultPort
    @Option(help: "Master: milliseconds a peer has to authenticate.") var handshakeTimeoutMs: Int64 = ConnectionLimits().handshakeTimeoutMillis
    @Option(help: "Master: open connections in all.") var maxConnections = ConnectionLimits().maxConnections
    @Option(help: "Master: open connections per peer address.") var maxConnectionsPerAddress = ConnectionLimits().maxConnectionsPerAddress
    @Option(help: "Master: locks per node.") var maxLocksPerNode = MasterLimits().maxLocksPerNode
    @Option(help: "Master: milliseconds before the locks of a gone non-member are purged.") var orphanGraceMs: Int64 = MasterLimits().orphanGraceMillis
    @Option(help: "Workload: take EX on this resource in a loop.") var workload: String?
    @Option(help: "Workload: how long each hold lasts, in milliseconds.") var holdMs: Int = 5
    @Option(help: "Workload: event log file (appended).") var log: String?
    @Option(help: "Append each coordination event to this file as `EVENT <id> <monotonic ns> <event>`.") var events: String?
    @Flag(help: "Exit when the parent process dies (tests and benchmarks use it, so no node outlives them).")
    var exitWithParent = false

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1...65535") }
        guard handshakeTimeoutMs > 0, orphanGraceMs >= 0 else {
            throw ValidationError("--handshake-timeout-ms must be positive and --orphan-grace-ms not negative")
        }
        guard maxConnections > 0, maxConnectionsPerAddress > 0, maxLocksPerNode > 0 else {
            throw ValidationError("--max-connections, --max-connections-per-address and --max-locks-per-node must be positive")
        }
    }

    func run() async throws {
        if exitWithParent {
            let parent = getppid()
            Task.detached {
                while getppid() == parent { try? await Task.sleep(nanoseconds: 100_000_000) }
                Foundation.exit(1)
            }
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var limits = MasterLimits()
        limits.connections.handshakeTimeoutMillis = handshakeTimeoutMs
        limits.connections.maxConnections = maxConnections
        limits.connections.maxConnectionsPerAddress = maxConnectionsPerAddress
        limits.maxLocksPerNode = maxLocksPerNode
        limits.orphanGraceMillis = orphanGraceMs
        let node = DLMNode(coordination: try backend.make(node: id), secret: try backend.clusterSecret(),
                           port: port, group: group, limits: limits)
        try await node.start()
        if let events {
            let fd = open(events, O_WRONLY | O_APPEND | O_CREAT, 0o644)
            guard fd >= 0 else { throw ValidationError("cannot open \(events): \(String(cString: strerror(errno)))") }
            let stream = node.coordination.events()
            Task {
                for await e in stream {
                    let line = "EVENT \(id) \(monotonicNow()) \(e)\n"
                    _ = line.withCString { write(fd, $0, strlen($0)) }
                }
            }
        }
        FileHandle.standardOutput.write(Data("node \(id) started on port \(port)\n".utf8))
        guard let resource = workload else {
            while true { try await Task.sleep(nanoseconds: 1_000_000_000) }
        }
        let out = log.map { open($0, O_WRONLY | O_APPEND | O_CREAT, 0o644) } ?? 1
        func emit(_ line: String) {
            let l = line + "\n"
            _ = l.withCString { write(out, $0, strlen($0)) }
        }
        while true {
            let handle: LockHandle, vb: ValueBlock
            do {
                (handle, vb) = try await node.client.lock(resource, mode: .ex, timeout: .seconds(30))
            } catch LockError.fenced {
                emit("FENCED \(id) \(monotonicNow())")
                break
            } catch {
                emit("ERR \(id) \(error)")
                try await Task.sleep(nanoseconds: 10_000_000)
                continue
            }
            // Act only while the lock is provably ours; the log line is the "write" to protect.
            guard node.client.isHeld(handle) else { emit("FENCED \(id) \(monotonicNow())"); break }
            let counter = vb.valid ? vb.bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } : 0
            emit("ACQ \(id) \(monotonicNow()) epoch=\(node.client.epoch ?? 0) lvb=\(vb.valid ? String(counter) : "invalid")")
            var lost = false
            let until = monotonicNow() + UInt64(holdMs) * 1_000_000
            while monotonicNow() < until {
                if !node.client.isHeld(handle) { lost = true; break }
                try await Task.sleep(nanoseconds: 1_000_000)
            }
            if lost || !node.client.isHeld(handle) {
                emit("FENCED \(id) \(monotonicNow())")
                break
            }
            emit("REL \(id) \(monotonicNow())")
            let next = counter + 1
            let bytes = (0..<8).reversed().map { UInt8(truncatingIfNeeded: next >> (8 * UInt64($0))) }
            do { try await node.client.unlock(handle, valueBlock: bytes) } catch { emit("ERR \(id) unlock \(error)") }
        }
        // Fenced: stay alive (a real node would restart with a new lease) so tests can observe it.
        while true { try await Task.sleep(nanoseconds: 1_000_000_000) }
    }
}

/// Lists resources, queues and holders as the current master sees them.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List resources, locks and holders.")
    @OptionGroup var backend: BackendOptions
    @Option(help: "Node id to authenticate as (an observer, not a member).") var id: UInt32 = 250
    @Option(help: "Seconds to wait for the whole listing.") var timeout: Int = 30

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let coordination = try backend.make(node: id)
        let client = LockClient(coordination: coordination, secret: try backend.clusterSecret(), group: group)
        client.start()
        do {
            print(try await client.listing(timeout: .seconds(timeout)))
        } catch {
            await client.stop()
            throw ValidationError("no lock master answered: \(error)")
        }
        await client.stop()
    }
}
