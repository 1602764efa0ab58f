import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// `-o metrics=HOST:PORT`: a node serves its swift-metrics for Prometheus, and they count what it did.
extension Mounted {
    @Suite struct MetricsTests {
        /// The text at `url`, fetched by a process of its own (`python3`), with a timeout.
        static func fetch(_ url: String) throws -> ProcessResult {
            try runProcess("/usr/bin/python3", ["-c", """
                import sys, urllib.request, urllib.error
                try:
                    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
                except urllib.error.HTTPError as e:
                    sys.stdout.write("HTTP %d" % e.code); sys.exit(3)
                """, url], timeout: 30)
        }

        /// `body(volume, second, port)` with a second node mounted at `second` that exports its metrics on `port`.
        static func withSecondNodeExportingMetrics(_ body: (TestVolume, String, Int) throws -> Void) throws {
            try withVolume { volume in
                try ClusterJoinTests.withSecondMountpoint(volume) { second in
                    let port = try freeLoopbackPort()
                    let joined = try volume.csvfs(["mount", volume.lun, second, "-o", "metrics=127.0.0.1:\(port)"], timeout: 90)
                    try #require(joined.succeeded, "\(joined)")
                    try body(volume, second, port)
                }
            }
        }

        /// The value of the sample `name{labels}` in a Prometheus text exposition, if there is one.
        static func sample(_ text: String, _ name: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }

        @Test func aNodeExportsItsRPCsAndLUNTrafficForPrometheus() throws {
            try MetricsTests.withSecondNodeExportingMetrics { volume, second, port in
                for index in 0..<20 { try writeFile(second + "/f\(index)", [UInt8(index)]) }
                let data = patternBytes(count: 1 << 20, seed: 9)
                try writeFile(second + "/big", data)
                #expect(try readFile(second + "/big") == data)

                let metrics = try Self.fetch("http://127.0.0.1:\(port)/metrics")
                try #require(metrics.succeeded, "\(metrics)")
                let text = metrics.stdout
                #expect((Self.sample(text, #"csvfs_metadata_rpcs_total{kind="createNode"}"#) ?? 0) >= 21, "21 creates: \(text)")
                #expect((Self.sample(text, #"csvfs_metadata_rpc_duration_seconds_count{kind="createNode"}"#) ?? 0) >= 21, "\(text)")
                #expect((Self.sample(text, #"csvfs_lun_bytes_total{direction="write"}"#) ?? 0) >= Double(1 << 20), "\(text)")
                #expect((Self.sample(text, #"csvfs_lun_bytes_total{direction="read"}"#) ?? 0) >= Double(1 << 20), "\(text)")
                #expect((Self.sample(text, #"csvfs_lun_ios_total{direction="write"}"#) ?? 0) >= 1, "\(text)")
                #expect(text.contains("csvfs_dlm_lock_wait_seconds"), "\(text)")

                // The other node changes what this one cached: this node drops its cache, and the kernel's.
                var status = stat()
                #expect(stat(second + "/f1", &status) == 0)
                #expect(chmod(volume.path("f1"), 0o600) == 0)
                #expect(stat(second + "/f1", &status) == 0 && status.st_mode & 0o777 == 0o600, "the other node's chmod")
                let after = try Self.fetch("http://127.0.0.1:\(port)/metrics").stdout
                #expect((Self.sample(after, #"csvfs_cache_invalidations_total{cache="node"}"#) ?? 0) >= 1, "\(after)")
                #expect((Self.sample(after, #"csvfs_cache_invalidations_total{cache="kernel"}"#) ?? 0) >= 1, "\(after)")
                let missing = try Self.fetch("http://127.0.0.1:\(port)/other")
                #expect(missing.status == 3 && missing.stdout == "HTTP 404", "\(missing)")
            }
        }

        @Test func aBadMetricsAddressIsRefused() throws {
            try withVolume(mounted: false) { volume in
                let result = try volume.csvfs(["mount", volume.lun, volume.mountpoint, "-o", "metrics=nowhere"], timeout: 90)
                #expect(result.status != 0 && result.stderr.contains("metrics=HOST:PORT"), "\(result)")
                #expect(!volume.isMounted)
            }
        }
    }
}
