import ArgumentParser
import VHDFormat

@main
struct VHDTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhdtool",
        abstract: "Make and inspect VHD and VHDX disk images, in the manner of qemu-img.",
        subcommands: [Info.self, Create.self, Convert.self, Check.self, Merge.self, Map.self])
}

/// Turns library errors into one clear line and a non-zero exit, instead of a stack of Swift types.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as VHDError {
        throw ValidationFailure(message: error.description)
    }
}

struct ValidationFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { "vhdtool: \(message)" }
}

extension ImageFormat: ExpressibleByArgument {}
