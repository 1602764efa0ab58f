import ArgumentParser
import CSVFS
import Foundation

struct Fsck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a CSVFS volume; exit 0 only when it is clean. Without --repair nothing is written.",
        discussion: "A mounted volume can be checked (with a warning: what is read may be inconsistent), not repaired.")

    @Argument(help: "The LUN holding the volume.")
    var lun: String

    @Flag(help: "Repair what can be repaired.")
    var repair = false

    func run() throws {
        // First, as e2fsck -n warns: a check beside a mount reads what the mount is changing.
        if !repair && VolumeUsage.isInUse(path: lun) {
            let warning = "csvfs fsck: warning: \(lun) is mounted (in use by another process): the results may be inconsistent\n"
            FileHandle.standardError.write(Data(warning.utf8))
        }
        let report: CheckReport
        do {
            report = try VolumeChecker.check(path: lun, repair: repair)
        } catch VolumeError.alreadyInUse where repair {
            throw Failure("csvfs fsck: \(lun): the volume is mounted or in use: refusing to repair it (unmount it first)")
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
