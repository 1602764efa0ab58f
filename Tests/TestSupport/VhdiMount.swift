import Foundation
import Glibc

/// libvhdi's FUSE view of an image: `vhdiN` files, one per image of the chain, the top one last.
/// Runs vhdimount in the foreground as our child so the test owns it; unmounts and reaps it on every path.
public enum VhdiMount {
    /// `directory` holds the mountpoint and vhdimount's output files.
    public static func withMount<T>(_ image: String, in directory: String, _ body: (_ mountPoint: String) throws -> T) throws -> T {
        let mountPoint = directory + "/vhdi-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let process = try ChildProcess("/usr/bin/vhdimount", ["-v", image, mountPoint], outputDirectory: URL(fileURLWithPath: directory))
        defer {
            _ = try? runProcess("/usr/bin/fusermount3", ["-u", mountPoint], timeout: 20)
            if process.wait(timeout: 10) == nil {
                process.kill()
                _ = try? runProcess("/usr/bin/umount", ["-l", mountPoint], timeout: 20)
            }
            try? FileManager.default.removeItem(atPath: mountPoint)
            process.removeOutputFiles()
        }
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: mountPoint + "/vhdi1") {
            guard process.isRunning, Date() < deadline else {
                throw ProcessFailure("vhdimount of \(image) did not come up: \(process.stderrText.suffix(600))")
            }
            usleep(20_000)
        }
        return try body(mountPoint)
    }

    /// The top image's view: the highest-numbered vhdiN.
    public static func topView(_ mountPoint: String) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: mountPoint)
        let numbers = names.compactMap { $0.hasPrefix("vhdi") ? Int($0.dropFirst(4)) : nil }
        guard let top = numbers.max() else { throw ProcessFailure("vhdimount shows no images") }
        return mountPoint + "/vhdi\(top)"
    }
}
