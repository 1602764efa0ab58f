import ArgumentParser
import VHDFormat

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge a differencing image into its parent.",
        discussion: "The parent then reads as the child did; the child is left in place (a VHDX child no longer matches the changed parent).")

    @Flag(name: .customLong("ignore-parent-identity"), help: "Merge even if the parent's identity does not match.") var allowMismatch = false
    @Flag(name: .short, help: "Show progress.") var progress = false
    @Argument(help: "The differencing image.") var file: String

    func run() throws {
        let printer = progress ? ProgressPrinter() : nil
        let parent = try reportingErrors {
            try DiskMerger.merge(child: file, allowParentMismatch: allowMismatch, progress: printer.map { p in { p.update($0, $1) } })
        }
        print("Image merged into \(parent).")
    }
}
