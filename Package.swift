// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "CSVFS",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "CSVFS", targets: ["CSVFS"]),
        .library(name: "VHDFormat", targets: ["VHDFormat"]),
        .library(name: "ClusterTransport", targets: ["ClusterTransport"]),
        .library(name: "LockManager", targets: ["LockManager"]),
        .library(name: "CSVFSCluster", targets: ["CSVFSCluster"]),
        .executable(name: "csvfs", targets: ["csvfs"]),
        .executable(name: "vhdtool", targets: ["vhdtool"]),
        .executable(name: "dlmtool", targets: ["dlmtool"]),
        .executable(name: "lockbench", targets: ["lockbench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // libfuse3 low-level API (system library + static inline shims prefixed cfuse_).
        .systemLibrary(name: "CFuse", path: "Sources/CFuse", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),
        // SQLite C API, used with our own VFS that maps the database onto the LUN.
        // Linux native AIO (libaio), so a few threads keep many LUN requests in flight.
        .systemLibrary(name: "CLibAIO", path: "Sources/CLibAIO", providers: [.apt(["libaio-dev"])]),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // Syscalls that need _GNU_SOURCE (O_DIRECT, fallocate modes, renameat2 flags), behind prefixed wrappers.
        .target(name: "CSVFSSystem", path: "Sources/CSVFSSystem", cSettings: [.define("_GNU_SOURCE")]),

        // Small pieces two or more of our libraries need, so each exists once: a pthread lock and a
        // locked box, CRC-32C, OFD byte-range locks (through CPrimitives). Depends on nothing of ours but CPrimitives.
        .target(name: "CPrimitives", path: "Sources/CPrimitives", cSettings: [.define("_GNU_SOURCE")]),
        .target(name: "Primitives", dependencies: ["CPrimitives"], path: "Sources/Primitives"),

        .target(name: "VHDFormat", dependencies: ["Primitives"], path: "Sources/VHDFormat"),
        // Framing, the authenticated and integrity-protected connection, requests and deadlines,
        // shared by the DLM and the metadata RPC; knows nothing of either.
        .target(name: "ClusterTransport",
                dependencies: [
                    .product(name: "NIOCore", package: "swift-nio"),
                    .product(name: "NIOPosix", package: "swift-nio"),
                    .product(name: "Crypto", package: "swift-crypto"),
                    .product(name: "Logging", package: "swift-log"),
                ],
                path: "Sources/ClusterTransport"),
        .target(name: "LockManager",
                dependencies: [
                    "Primitives", "ClusterTransport",
                    .product(name: "NIOCore", package: "swift-nio"),
                    .product(name: "NIOPosix", package: "swift-nio"),
                    // The etcd backend's HTTP/1.1 client (not FoundationNetworking, which traps on a dropped connection).
                    .product(name: "NIOHTTP1", package: "swift-nio"),
                    .product(name: "Crypto", package: "swift-crypto"),
                    .product(name: "Logging", package: "swift-log"),
                    .product(name: "HeapModule", package: "swift-collections"),
                    .product(name: "Metrics", package: "swift-metrics"),
                ],
                path: "Sources/LockManager"),
        .target(name: "CSVFS",
                dependencies: [
                    "CFuse", "CLibAIO", "CSQLite", "CSVFSSystem", "Primitives",
                    // Reads the volume's VHD/VHDX files for their user.vhd.* attributes.
                    "VHDFormat",
                    .product(name: "Logging", package: "swift-log"),
                    .product(name: "Metrics", package: "swift-metrics"),
                ],
                path: "Sources/CSVFS"),

        // The volume as a cluster: joining, the coordinator role, the metadata RPC on the cluster transport.
        .target(name: "CSVFSCluster",
                dependencies: [
                    "CSVFS", "CSVFSSystem", "LockManager", "ClusterTransport", "Primitives",
                    .product(name: "NIOCore", package: "swift-nio"),
                    .product(name: "NIOPosix", package: "swift-nio"),
                    .product(name: "Logging", package: "swift-log"),
                ],
                path: "Sources/CSVFSCluster"),

        .executableTarget(name: "csvfs",
                          dependencies: ["CSVFS", "CSVFSCluster", "CSVFSSystem", "Primitives",
                                         .product(name: "Prometheus", package: "swift-prometheus"),
                                         .product(name: "Metrics", package: "swift-metrics"),
                                         .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                                         .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/csvfs"),
        .executableTarget(name: "vhdtool",
                          dependencies: ["VHDFormat", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/vhdtool"),
        .executableTarget(name: "dlmtool",
                          dependencies: ["LockManager", "ClusterTransport", "ClusterTestSupport", "TestSupport",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Crypto", package: "swift-crypto"), .product(name: "NIOCore", package: "swift-nio"),
                                         .product(name: "NIOPosix", package: "swift-nio"),
                                         .product(name: "Logging", package: "swift-log")],
                          path: "tools/dlmtool"),
        // bench/lock-bench.sh's driver: fcntl lock latency, nothing of ours, so the baseline pays only the syscall.
        .executableTarget(name: "lockbench", path: "tools/lockbench"),

        // Helpers every test target shares (seeded randomness, child processes, temporary places);
        // not part of any product.
        .target(name: "TestSupport", dependencies: ["CSVFSSystem", "Primitives"], path: "Tests/TestSupport"),
        // A real etcd for the cluster's tests and `dlmtool bench`; not part of any product.
        .target(name: "ClusterTestSupport", dependencies: ["TestSupport", "Primitives"], path: "Tests/ClusterTestSupport"),
        .testTarget(name: "PrimitivesTests", dependencies: ["Primitives"], path: "Tests/PrimitivesTests"),
        .testTarget(name: "CSVFSTests", dependencies: ["CSVFS", "VHDFormat", "Primitives", "TestSupport", "ClusterTestSupport"], path: "Tests/CSVFSTests"),
        .testTarget(name: "CSVFSClusterTests", dependencies: ["CSVFSCluster", "CSVFS", "LockManager"], path: "Tests/CSVFSClusterTests"),
        .testTarget(name: "CSVFSUnitTests", dependencies: ["CSVFS", "CSQLite", "Primitives", "TestSupport"], path: "Tests/CSVFSUnitTests"),
        // The fuzz target's input decoder and exercise, so the corpus replay test runs the same code.
        .target(name: "VHDFormatExercise", dependencies: ["VHDFormat"], path: "fuzz/Sources/VHDFormatExercise"),
        .testTarget(name: "VHDFormatTests", dependencies: ["VHDFormat", "VHDFormatExercise", "TestSupport"], path: "Tests/VHDFormatTests"),
        .testTarget(name: "LockManagerTests",
                    // CSVFS for the local backend on a formatted LUN (CoordinationRangeTests); run in their own
                    // process (CI: --filter LockManagerTests) so the election tasks are not starved.
                    dependencies: ["LockManager", "ClusterTransport", "CSVFS", "TestSupport", "ClusterTestSupport", .product(name: "NIOCore", package: "swift-nio"),
                                   .product(name: "NIOPosix", package: "swift-nio")],
                    path: "Tests/LockManagerTests"),
        .testTarget(name: "ClusterTransportTests",
                    dependencies: ["ClusterTransport", "TestSupport", .product(name: "NIOCore", package: "swift-nio"),
                                   .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                                   .product(name: "Crypto", package: "swift-crypto")],
                    path: "Tests/ClusterTransportTests"),
    ]
)
