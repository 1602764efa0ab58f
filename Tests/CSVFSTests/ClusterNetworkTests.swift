import ClusterTestSupport
import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// Nodes on several hosts: each node in a network namespace of its own (its own address), joining through a
/// real etcd in another, all on one LUN image, as hypervisor hosts on one SAN LUN.
extension Mounted {
    @Suite struct ClusterNetworkTests {
        @Test func threeNodesOnThreeHostsThroughEtcdShareOneNamespace() throws {
            try withVolume(mounted: false) { volume in
                let network = try TestNetwork(subnet: "10.77.\(getpid() % 200 + 20)")
                var servers: [ChildProcess] = []
                var mountpoints: [String] = []
                var etcd: EtcdServer?
                defer {
                    for mountpoint in mountpoints where MountTable.isMounted(mountpoint) { _ = try? volume.csvfs(["unmount", mountpoint]) }
                    for server in servers { server.kill() }
                    for mountpoint in mountpoints where MountTable.isMounted(mountpoint) {
                        _ = try? runProcess("/usr/bin/fusermount3", ["-u", "-z", mountpoint], timeout: 30)
                    }
                    etcd?.stop()
                    network.destroy()
                }
                let etcdHost = try network.addHost(100)
                let hosts = try (1...3).map { try network.addHost($0) }
                etcd = try EtcdServer(on: etcdHost, network: network)
                let endpoint = try #require(etcd?.endpoint)

                // One after the other, so the first is the coordinator.
                for (index, host) in hosts.enumerated() {
                    let mountpoint = volume.directory.appendingPathComponent("host\(index + 1)").path
                    try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: false)
                    mountpoints.append(mountpoint)
                    let server = try network.start(on: host, volume.binary, volume.withSecret(["mount", volume.lun, mountpoint, "--foreground",
                                                                                               "--etcd", endpoint]),
                                                   outputDirectory: volume.directory)
                    servers.append(server)
                    let deadline = Date().addingTimeInterval(60)
                    while MountTable.entry(at: mountpoint)?.fileSystemType != "fuse.csvfs" {
                        if let status = server.wait(timeout: 0) { throw FixtureError("node \(index + 1) exited: \(server.result(status: status))") }
                        if Date() > deadline { throw FixtureError("node \(index + 1) not mounted within 60 s: \(server.stderrText)") }
                        usleep(20_000)
                    }
                }

                let status = try network.run(on: hosts[1], volume.binary, ["status", mountpoints[1], "--etcd", endpoint, "--json"])
                try #require(status.succeeded, "\(status)")
                let parsed = try JSONDecoder().decode(StatusReport.self, from: Data(status.stdout.utf8))
                #expect(parsed.coordinator?.node == 1, "\(status.stdout)")
                #expect(parsed.nodes.map(\.id) == [1, 2, 3] && parsed.nodes.allSatisfy(\.alive), "\(status.stdout)")
                for (node, host) in zip(parsed.nodes, hosts) {
                    #expect(node.address?.hasPrefix(host.address + ":") == true, "each node serves on its own host's address: \(status.stdout)")
                }

                // Every node writes, renames and removes; every node sees the same tree after each round.
                for round in 0..<3 {
                    for (index, mountpoint) in mountpoints.enumerated() {
                        let directory = mountpoint + "/r\(round)-n\(index + 1)"
                        try sys("mkdir") { mkdir(directory, 0o755) }
                        for file in 0..<5 {
                            try writeFile(directory + "/f\(file)", patternBytes(count: 5000 * (file + 1), seed: UInt64(round * 100 + index * 10 + file)))
                        }
                        try sys("rename") { rename(directory + "/f0", directory + "/renamed") }
                        try sys("unlink") { unlink(directory + "/f1") }
                    }
                    let views = try mountpoints.map { try TreeSnapshot(root: $0) }
                    for (index, view) in views.enumerated().dropFirst() {
                        let differences = view.differences(from: views[0])
                        #expect(differences.isEmpty, "round \(round): node \(index + 1) differs from node 1: \(differences.joined(separator: "\n"))")
                    }
                    #expect(views[0].entries.count == (round + 1) * 3 * 5, "3 directories of 4 files per round")
                }
                let reread = try readFile(mountpoints[2] + "/r0-n1/renamed")
                #expect(reread == patternBytes(count: 5000, seed: 0), "node 3 reads node 1's bytes")

                for (index, mountpoint) in mountpoints.enumerated().reversed() {
                    let unmounted = try volume.csvfs(["unmount", mountpoint])
                    #expect(unmounted.succeeded, "node \(index + 1): \(unmounted)")
                    #expect(servers[index].wait(timeout: 30) == 0, "node \(index + 1) exits cleanly: \(servers[index].stderrText)")
                }
                let fsck = try volume.fsck()
                #expect(fsck.succeeded, "fsck after three hosts' work: \(fsck)")
            }
        }
    }
}
