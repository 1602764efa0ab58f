import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// `mount.csvfs`, the helper mount(8) runs for `mount -t csvfs` and fstab lines: the csvfs binary under that
/// name, taking mount(8)'s arguments and its generic options.
extension Mounted {
    @Suite struct MountHelperTests {
        @Test func helperMountsWithFstabOptions() throws {
            try withVolume(mounted: false) { volume in
                let helper = volume.directory.appendingPathComponent("mount.csvfs").path
                try FileManager.default.createSymbolicLink(atPath: helper, withDestinationPath: volume.binary)
                // As mount(8) calls it for an fstab line "LUN DIR csvfs defaults,_netdev,noatime,x-systemd.automount 0 0".
                let result = try runProcess(helper, [volume.lun, volume.mountpoint, "-o", "rw,defaults,_netdev,noatime,x-systemd.automount,secret_file=\(volume.secretFile)"],
                                            timeout: 90)
                #expect(result.succeeded, "\(result)")
                let entry = MountTable.entry(at: volume.mountpoint)
                #expect(entry?.fileSystemType == "fuse.csvfs")
                try writeFile(volume.path("through-helper"), Array("fstab".utf8))
                #expect(try readFile(volume.path("through-helper")) == Array("fstab".utf8))
                let unmount = try volume.csvfs(["unmount", volume.mountpoint])
                #expect(unmount.succeeded, "\(unmount)")
                #expect(!volume.isMounted)
            }
        }

        @Test func helperPassesReadOnlyToTheKernel() throws {
            try withVolume(mounted: false) { volume in
                let helper = volume.directory.appendingPathComponent("mount.csvfs").path
                try FileManager.default.createSymbolicLink(atPath: helper, withDestinationPath: volume.binary)
                let result = try runProcess(helper, [volume.lun, volume.mountpoint, "-o", "ro,secret_file=\(volume.secretFile)"], timeout: 90)
                #expect(result.succeeded, "\(result)")
                #expect(openErrno(volume.path("nope"), O_CREAT | O_WRONLY, 0o644) == EROFS)
                let unmount = try volume.csvfs(["unmount", volume.mountpoint])
                #expect(unmount.succeeded, "\(unmount)")
            }
        }

        @Test func helperReportsAMissingLUN() throws {
            try withVolume(mounted: false) { volume in
                let helper = volume.directory.appendingPathComponent("mount.csvfs").path
                try FileManager.default.createSymbolicLink(atPath: helper, withDestinationPath: volume.binary)
                let result = try runProcess(helper, [volume.lun + ".missing", volume.mountpoint], timeout: 90)
                #expect(result.status != 0)
                #expect(result.stderr.contains("missing"), "\(result)")
                #expect(!volume.isMounted)
            }
        }
    }
}
