import ArgumentParser
import Foundation
import VHDFormat

struct Map: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the allocated and zero ranges of the flattened disk.")

    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "The image file.") var file: String

    func run() throws {
        let ranges = try reportingErrors { try VirtualDisk.open(file).allocationMap() }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(ranges), as: UTF8.self))
            return
        }
        print("Offset              Length              Mapped to")
        for range in ranges {
            let target = range.file.map { "\($0) (depth \(range.depth ?? 0))" } ?? "zero"
            print(String(format: "0x%016llx  0x%016llx  %@", range.offset, range.length, target))
        }
    }
}
