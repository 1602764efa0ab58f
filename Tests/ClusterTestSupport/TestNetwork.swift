import Foundation
import Glibc
import Primitives
import TestSupport

/// Hosts in network namespaces of their own on one switch (a bridge in a namespace of its own), so a test
/// runs a cluster of several "hosts" on this machine without touching the root namespace's network. Nodes
/// are started with `nsenter --net` (not `ip netns exec`, whose private mount namespace would hide their
/// FUSE mounts). `destroy` deletes every namespace (and so every veth) it made; call it in teardown.
public final class TestNetwork: Sendable {
    public struct Host: Sendable {
        public let namespace: String
        public let address: String
        /// The host's end of its link, inside its namespace: down cuts it off.
        let interface: String
        public var netnsPath: String { "/var/run/netns/\(namespace)" }
    }

    public let subnet: String
    private let prefix: String
    private let switchNamespace: String
    private let hosts = Locked<[Host]>([])

    /// `subnet` like "10.77.3" (a /24 no other interface here uses).
    public init(subnet: String) throws {
        self.subnet = subnet
        prefix = "cv\(getpid() % 100_000)"
        switchNamespace = "\(prefix)-switch"
        try Self.ip(["netns", "add", switchNamespace])
        do {
            try Self.ip(["-n", switchNamespace, "link", "add", "br0", "type", "bridge"])
            try Self.ip(["-n", switchNamespace, "link", "set", "br0", "up"])
        } catch {
            destroy()
            throw error
        }
    }

    /// A new host at `subnet.number`, linked to the switch.
    public func addHost(_ number: Int) throws -> Host {
        let index = hosts.withLock { $0.count }
        let host = Host(namespace: "\(prefix)-h\(number)", address: "\(subnet).\(number)", interface: "eth\(index)")
        let outside = "\(prefix)s\(index)", inside = "\(prefix)h\(index)"
        try Self.ip(["netns", "add", host.namespace])
        hosts.withLock { $0.append(host) }
        try Self.ip(["link", "add", outside, "netns", switchNamespace, "type", "veth", "peer", "name", inside, "netns", host.namespace])
        try Self.ip(["-n", switchNamespace, "link", "set", outside, "master", "br0", "up"])
        try Self.ip(["-n", host.namespace, "link", "set", inside, "name", host.interface])
        try Self.ip(["-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", host.interface])
        try Self.ip(["-n", host.namespace, "link", "set", host.interface, "up"])
        try Self.ip(["-n", host.namespace, "link", "set", "lo", "up"])
        return host
    }

    public func cut(_ host: Host) throws { try Self.ip(["-n", host.namespace, "link", "set", host.interface, "down"]) }
    public func heal(_ host: Host) throws { try Self.ip(["-n", host.namespace, "link", "set", host.interface, "up"]) }

    /// `executable ARGS` as a process of `host` (its sockets in the host's namespace).
    public func start(on host: Host, _ executable: String, _ arguments: [String], outputDirectory: URL? = nil,
                      lifeline: Bool = false) throws -> ChildProcess {
        try ChildProcess("/usr/bin/nsenter", ["--net=\(host.netnsPath)", executable] + arguments,
                         outputDirectory: outputDirectory, lifeline: lifeline)
    }

    /// Runs `executable ARGS` on `host` to completion.
    public func run(on host: Host, _ executable: String, _ arguments: [String], timeout: TimeInterval = 60) throws -> ProcessResult {
        try runProcess("/usr/bin/nsenter", ["--net=\(host.netnsPath)", executable] + arguments, timeout: timeout)
    }

    /// Deletes every namespace made, which deletes their veths with them.
    public func destroy() {
        for host in hosts.withLock({ $0 }) { try? Self.ip(["netns", "del", host.namespace]) }
        hosts.withLock { $0 = [] }
        try? Self.ip(["netns", "del", switchNamespace])
    }

    static func ip(_ arguments: [String]) throws {
        let result = try runProcess("/usr/sbin/ip", arguments, timeout: 30)
        guard result.succeeded else { throw ProcessFailure("ip \(arguments.joined(separator: " ")): \(result.stderr)") }
    }
}
