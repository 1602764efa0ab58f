import ArgumentParser
import VHDFormat

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a disk (its chain flattened) into raw, vhd or vhdx.",
        discussion: "With --parent P the output is a differencing image of P holding only what differs from P.")

    @Option(name: .customShort("f"), help: "Source format (default: detected; raw must be given).") var sourceFormat: ImageFormat?
    @Option(name: .customShort("O"), help: "Output format: raw, vhd or vhdx.") var outputFormat: ImageFormat
    @Flag(help: "Fixed output instead of dynamic.") var fixed = false
    @Option(help: "Output block size (e.g. 2M).") var blockSize: SizeArgument?
    @Option(name: [.customShort("B"), .customLong("parent")], help: "Write a differencing image of this parent.") var parent: String?
    @Flag(name: .customLong("ignore-parent-identity"), help: "Accept source parents whose identity does not match.") var allowMismatch = false
    @Flag(name: .short, help: "Show progress.") var progress = false
    @Argument(help: "Source image.") var source: String
    @Argument(help: "Output file (replaced if it exists).") var destination: String

    func run() throws {
        let printer = progress ? ProgressPrinter() : nil
        try reportingErrors {
            try DiskConverter.convert(from: source, to: destination, options: .init(
                sourceFormat: sourceFormat, outputFormat: outputFormat, outputType: fixed ? .fixed : .dynamic,
                blockSize: blockSize?.bytes, parentPath: parent, allowParentMismatch: allowMismatch), progress: printer.map { p in { p.update($0, $1) } })
        }
    }
}
