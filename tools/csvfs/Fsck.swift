import ArgumentParser
import CSVFS

struct Fsck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a CSVFS volume (not mounted); exit 0 only when it is clean.")

    @Argument(help: "The LUN holding the volume.")
    var lun: String

    @Flag(help: "Repair what can be repaired.")
    var repair = false

    func run() throws {
        let report: CheckReport
        do {
            report = try VolumeChecker.check(path: lun, repair: repair)
        } catch {
            throw Failure("csvfs fsck: \(lun): \(error)")
        }
        for finding in report.findings { print(finding) }
        print("\(lun): \(report.inodes) inodes (\(report.directories) directories, \(report.orphans) orphans), "
              + "\(ByteSize.format(report.usedBytes)) used, \(ByteSize.format(report.freeBytes)) free")
        if report.isClean {
            print(report.findings.isEmpty ? "clean" : "repaired: \(report.findings.count) problems fixed")
        } else {
            let left = report.findings.filter { !$0.repaired }.count
            throw Failure("csvfs fsck: \(left) problems found\(repair ? " that could not be repaired" : " (run with --repair)")")
        }
    }
}
