// swift-tools-version:6.0
// libFuzzer target over the VHD/VHDX parsers. A package of its own so `swift test` of the main package
// never links libFuzzer. VHDFormat and Primitives are the main package's sources, through symlinks.
import PackageDescription

let fuzzFlags: [SwiftSetting] = [.unsafeFlags(["-sanitize=fuzzer,address"])]

let package = Package(
    name: "VHDFormatFuzz",
    targets: [
        .target(name: "CPrimitives", path: "Sources/CPrimitives", cSettings: [.define("_GNU_SOURCE")]),
        .target(name: "Primitives", dependencies: ["CPrimitives"], path: "Sources/Primitives", swiftSettings: fuzzFlags),
        .target(name: "VHDFormat", dependencies: ["Primitives"], path: "Sources/VHDFormat", swiftSettings: fuzzFlags),
        .executableTarget(name: "vhd-fuzz", dependencies: ["VHDFormat"], path: "Sources/vhd-fuzz",
                          swiftSettings: fuzzFlags + [.unsafeFlags(["-parse-as-library"])],
                          linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]),
    ]
)
