import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// The failure-detection settings an admin sets at mount (`-o lease_ttl=S,io_timeout=S`) and sees in
/// `csvfs status`; past the I/O timeout, an application on a node cut off from its coordinator gets an error
/// instead of waiting for ever, and the node serves again once the coordinator is back.
extension Mounted {
    @Suite struct FailureDetectionTests {
        @Test func settingsAreShownByStatusAndBadOnesAreRefused() throws {
            try withVolume(.follower) { volume in
                try writeFile(volume.path("first"), Array("first".utf8))
                try ClusterJoinTests.withSecondMountpoint(volume) { third in
                    for (option, why) in [("io_timeout=0", "io_timeout=0"), ("io_timeout=soon", "expected io_timeout=SECONDS"),
                                          ("lease_ttl=5", "applies to the etcd backend")] {
                        try ClusterJoinTests.expectRefused(volume, ["-o", option], at: third, saying: why)
                    }
                    let joined = try volume.csvfs(["mount", volume.lun, third, "-o", "io_timeout=7"], timeout: 90)
                    try #require(joined.succeeded, "\(joined)")
                    let json = try volume.csvfs(["status", third, "--json"])
                    try #require(json.succeeded, "\(json)")
                    let status = try JSONDecoder().decode(StatusReport.self, from: Data(json.stdout.utf8))
                    #expect(status.failureDetection == .init(leaseTTLSeconds: nil, ioTimeoutSeconds: 7), "\(json.stdout)")
                    let text = try volume.csvfs(["status", volume.mountpoint])
                    #expect(text.stdout.contains("failure detection (this node): local backend"), "\(text.stdout)")
                    #expect(text.stdout.contains("I/O timeout 60 s"), "the default: \(text.stdout)")
                }
            }
        }

        @Test func pastTheIOTimeoutAStoppedCoordinatorIsAnErrorAndServiceResumesWithIt() throws {
            try withVolume(.follower, mounted: false) { volume in
                try volume.mount(options: ["io_timeout=3"])
                let coordinator = try #require(volume.coordinatorServer)
                try writeFile(volume.path("before"), [1])
                // The local backend's lease is the coordinator's lock on the LUN, which a stopped process keeps:
                // no failover, the other node is cut off from it.
                #expect(kill(coordinator.pid, SIGSTOP) == 0)
                var resumed = false
                defer { if !resumed { kill(coordinator.pid, SIGCONT) } }
                let started = ContinuousClock.now
                let fd = open(volume.path("during"), O_CREAT | O_EXCL | O_WRONLY, 0o644)
                let failure = errno
                let waited = ContinuousClock.now - started
                #expect(fd == -1 && [EIO, ETIMEDOUT].contains(failure), "fd \(fd), errno \(failure)")
                if fd >= 0 { close(fd) }
                #expect(waited >= .milliseconds(2500), "the error came before the I/O timeout: \(waited)")
                #expect(waited < .seconds(60), "the error came long after the I/O timeout: \(waited)")
                #expect(kill(coordinator.pid, SIGCONT) == 0)
                resumed = true
                #expect(eventually(30) {
                    let fd = open(volume.path("after"), O_CREAT | O_WRONLY, 0o644)
                    if fd >= 0 { close(fd) }
                    return fd >= 0
                }, "the node serves again once the coordinator is back")
                #expect(try readFile(volume.path("before")) == [1])
            }
        }
    }
}
