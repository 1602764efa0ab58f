import CFuse
import Dispatch
import Foundation
import Glibc
import Logging

public enum MountError: Error, CustomStringConvertible {
    case missingMountpoint(String)
    case notADirectory(String)
    case sessionFailed(String)
    case mountFailed(String)

    public var description: String {
        switch self {
        case .missingMountpoint(let path): return "mountpoint \(path) does not exist"
        case .notADirectory(let path): return "mountpoint \(path) is not a directory"
        case .sessionFailed(let why): return "cannot start FUSE session: \(why)"
        case .mountFailed(let path): return "cannot mount on \(path) (is FUSE available, and are you root?)"
        }
    }
}

/// Serves a volume through the kernel's FUSE device until it is unmounted or the process is told to stop.
public enum FUSESession {
    public static func checkMountpoint(_ path: String) throws(MountError) {
        var status = stat()
        guard stat(path, &status) == 0 else { throw .missingMountpoint(path) }
        guard status.st_mode & S_IFMT == S_IFDIR else { throw .notADirectory(path) }
    }

    /// The mountpoint as this host names it, resolved while it is still the directory under the mount
    /// (afterwards resolving it would go through the mount, that is to this server).
    private static func absolutePath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Serves `metadata` and `data`, as a node of a cluster does; the kernel may cache names and attributes
    /// for as long as `cache` says at each reply.
    public static func serve(metadata: any MetadataService, data: DataPath, cache: any KernelCachePolicy, lunPath: String,
                             mountpoint: String, node: UInt32 = 0, ownership: any DiskOwnership,
                             protection: any ImageProtection, options: [String], logger: Logger, ready: @escaping @Sendable () -> Void) throws {
        try checkMountpoint(mountpoint)
        let filesystem = FUSEFilesystem(service: metadata, data: data, cache: cache, mountpoint: absolutePath(mountpoint),
                                        node: node, ownership: ownership, protection: protection, logger: logger, initialized: ready)
        let userdata = Unmanaged.passRetained(filesystem)
        defer { userdata.release() }

        let fsname = lunPath.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ",", with: "\\,")
        let allOptions = ["allow_other", "default_permissions", "fsname=\(fsname)", "subtype=csvfs"] + options
        let arguments: [String] = ["csvfs", "-o", allOptions.joined(separator: ",")]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var argvPointers = argv + [nil]
        var operations = FUSEOperations.make()
        let session = argvPointers.withUnsafeMutableBufferPointer { pointers -> OpaquePointer? in
            var args = cfuse_args_empty()
            args.argc = Int32(argv.count)
            args.argv = pointers.baseAddress
            return fuse_session_new(&args, &operations, MemoryLayout<fuse_lowlevel_ops>.size, userdata.toOpaque())
        }
        guard let session else { throw MountError.sessionFailed("bad mount options: \(options.joined(separator: ","))") }
        defer { fuse_session_destroy(session) }
        guard fuse_set_signal_handlers(session) == 0 else { throw MountError.sessionFailed("cannot install signal handlers") }
        defer { fuse_remove_signal_handlers(session) }
        guard fuse_session_mount(session, mountpoint) == 0 else { throw MountError.mountFailed(mountpoint) }
        defer { fuse_session_unmount(session) }
        cache.notifier?.attach(session)
        defer { cache.notifier?.detach() }

        // Once a second: mtimes of overwrites committed, everything flushed to the LUN (which also releases
        // the space deletes freed), so even without fsync nothing older than a second is lost to power loss.
        let committer = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        committer.schedule(deadline: .now() + 1, repeating: 1)
        let service = metadata
        committer.setEventHandler {
            // The open files whose changes it failed to make durable hear of it at their next fsync.
            do throws(Errno) { try service.sync() } catch { logger.error("flushing the LUN failed: \(error)") }
        }
        committer.resume()
        defer { committer.cancel() }

        logger.info("mounted", metadata: ["lun": "\(lunPath)", "mountpoint": "\(mountpoint)"])
        FUSERequestLoop(session: session, maxThreads: 64).run()
        // Reads still on the LUN answer their requests when they complete, so the session must outlive them.
        data.drain()
        committer.cancel()
        // What the last second changed: the committer no longer runs.
        do throws(Errno) { try metadata.sync() } catch { logger.error("flushing the LUN at unmount failed: \(error)") }
        logger.info("unmounting")
    }
}
