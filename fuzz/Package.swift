// swift-tools-version:6.0
// libFuzzer target over the VHD/VHDX parsers. A package of its own so `swift test` of the main package
// never links libFuzzer. VHDFormat is the main package's source, through a symlink.
import PackageDescription

let fuzzFlags: [SwiftSetting] = [.unsafeFlags(["-sanitize=fuzzer,address"])]

let package = Package(
    name: "VHDFormatFuzz",
    targets: [
        .target(name: "VHDFormat", path: "Sources/VHDFormat", swiftSettings: fuzzFlags),
        .target(name: "VHDFormatExercise", dependencies: ["VHDFormat"], path: "Sources/VHDFormatExercise", swiftSettings: fuzzFlags),
        .executableTarget(name: "vhd-fuzz", dependencies: ["VHDFormatExercise"], path: "Sources/vhd-fuzz",
                          swiftSettings: fuzzFlags + [.unsafeFlags(["-parse-as-library"])],
                          linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]),
    ]
)
