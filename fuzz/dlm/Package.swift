// swift-tools-version:6.0
// libFuzzer target over the cluster transport's frame decoder and the DLM's message decoder. A
// package of its own so `swift test` of the main package never links libFuzzer. ClusterTransport
// and DLMWire are the main package's frame and message code (and the table's value types the
// messages name), through symlinks.
import PackageDescription

let fuzzFlags: [SwiftSetting] = [.unsafeFlags(["-sanitize=fuzzer,address"])]

let package = Package(
    name: "DLMWireFuzz",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .target(name: "ClusterTransport", dependencies: [.product(name: "NIOCore", package: "swift-nio"),
                                                         .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/ClusterTransport", swiftSettings: fuzzFlags),
        .target(name: "DLMWire", dependencies: [.product(name: "NIOCore", package: "swift-nio")],
                path: "Sources/DLMWire", swiftSettings: fuzzFlags),
        .executableTarget(name: "dlm-fuzz", dependencies: ["ClusterTransport", "DLMWire", .product(name: "NIOCore", package: "swift-nio"),
                                                           .product(name: "Crypto", package: "swift-crypto")],
                          path: "Sources/dlm-fuzz",
                          swiftSettings: fuzzFlags + [.unsafeFlags(["-parse-as-library"])],
                          linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]),
    ]
)
