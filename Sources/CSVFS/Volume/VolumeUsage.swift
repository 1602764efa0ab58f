import CSVFSSystem
import Glibc

/// Whether some process has the volume open, without disturbing it.
public enum VolumeUsage {
    public static func isInUse(path: String) -> Bool {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var held: Int32 = 0
        return csvfs_ofd_test_write_lock(fd, LUNDevice.inUseLockOffset, 1, &held) == 0 && held != 0
    }
}
