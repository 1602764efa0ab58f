import ArgumentParser
import CSVFS
import Foundation

@main
struct CSVFSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csvfs",
        abstract: "CSVFS: a clustered shared-volume filesystem for VM disks on a shared LUN.",
        subcommands: [Format.self, Mount.self, Unmount.self, Status.self, Fsck.self, Info.self])

    /// `mount -t csvfs` runs /sbin/mount.csvfs (a link to this program) with mount(8)'s arguments.
    static func main() {
        let arguments = CommandLine.arguments
        if URL(fileURLWithPath: arguments[0]).lastPathComponent == "mount.csvfs" {
            do {
                let command = try Mount.parse(MountHelper.translate(Array(arguments.dropFirst())))
                try command.run()
            } catch {
                Mount.exit(withError: error)
            }
            return
        }
        main(nil)
    }
}

/// A failure with a message for the admin; exits non-zero.
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum ByteSize {
    /// "512M", "4G", "1T", "1048576".
    static func parse(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = text.uppercased()
        if digits.hasSuffix("IB") { digits.removeLast(2) } else if digits.hasSuffix("B") { digits.removeLast() }
        var multiplier: Int64 = 1
        if let last = digits.last, let unit = units[last] {
            multiplier = unit
            digits.removeLast()
        }
        guard let value = Int64(digits), value > 0 else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), index = 0
        while value >= 1024 && index < units.count - 1 {
            value /= 1024
            index += 1
        }
        return index == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[index])
    }
}
