// swift-tools-version:6.0
// libFuzzer target over the DLM's frame and message decoders. A package of its own so `swift test`
// of the main package never links libFuzzer. DLMWire is the main package's wire code (and the
// table's value types it names), through symlinks.
import PackageDescription

let fuzzFlags: [SwiftSetting] = [.unsafeFlags(["-sanitize=fuzzer,address"])]

let package = Package(
    name: "DLMWireFuzz",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(name: "DLMWire", dependencies: [.product(name: "NIOCore", package: "swift-nio")],
                path: "Sources/DLMWire", swiftSettings: fuzzFlags),
        .executableTarget(name: "dlm-fuzz", dependencies: ["DLMWire", .product(name: "NIOCore", package: "swift-nio")],
                          path: "Sources/dlm-fuzz",
                          swiftSettings: fuzzFlags + [.unsafeFlags(["-parse-as-library"])],
                          linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]),
    ]
)
