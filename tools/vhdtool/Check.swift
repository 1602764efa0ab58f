import ArgumentParser
import Foundation
import VHDFormat

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an image's structures; exit 0 when clean, 2 when problems remain, 1 when unreadable.")

    @Flag(help: "Repair what can be repaired (replay the log, drop bad BAT entries, rewrite damaged copies).") var repair = false
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "The image file.") var file: String

    func run() throws {
        let report = try reportingErrors { try DiskChecker.check(file, repair: repair) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            for repair in report.repairs { print("Repaired: \(repair)") }
            for problem in report.problems { print("ERROR: \(problem)") }
            print(report.isClean ? "No errors were found on the image." : "\(report.problems.count) errors were found on the image.")
        }
        if !report.isClean { throw ExitCode(2) }
    }
}
