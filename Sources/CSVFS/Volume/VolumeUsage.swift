import Glibc
import Primitives

/// Whether some process has the volume open, without disturbing it.
public enum VolumeUsage {
    public static func isInUse(path: String) -> Bool {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let claim = LUNDevice.inUseLockOffset..<(LUNDevice.inUseLockOffset + 1)
        return (try? OFDLock.conflictingLock(fd, claim)) != nil
    }
}
