import ArgumentParser
import CSVFS
import Foundation
import Glibc

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount a CSVFS volume and wait until its server has closed the LUN.")

    @Argument(help: "The mountpoint.")
    var mountpoint: String

    @Option(help: "Seconds to wait for the server to finish.")
    var timeout: Double = 60

    func run() throws {
        let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        guard let mount = MountTable.csvfsMount(at: path) else {
            throw Failure("csvfs unmount: \(mountpoint) is not a mounted CSVFS volume")
        }
        guard umount2(path, 0) == 0 else {
            throw Failure("csvfs unmount: \(mountpoint): \(Errno.current)")
        }
        // The server checkpoints and releases the LUN after the kernel lets go; wait for that.
        let deadline = Date().addingTimeInterval(timeout)
        while VolumeUsage.isInUse(path: mount.source) {
            if Date() > deadline { throw Failure("csvfs unmount: server still holds \(mount.source) after \(Int(timeout)) s") }
            usleep(20_000)
        }
    }
}
