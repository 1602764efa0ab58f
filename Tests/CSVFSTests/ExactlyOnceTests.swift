import CSVFS
import Foundation
import Glibc
import Testing
import TestSupport

/// A change whose answer is lost with its coordinator (it dies right after the commit, before the reply) is
/// sent again to the next coordinator, which finds it recorded with the change and answers as the first one
/// would have: the application sees success, and the change happened once.
extension Mounted {
    @Suite struct ExactlyOnceTests {
        enum Change: String, CaseIterable, CustomTestStringConvertible {
            case createNode, rename, unlink, link, removeXattr
            var testDescription: String { rawValue }
        }

        @Test(arguments: Change.allCases) func aChangeWhoseAnswerDiedWithTheCoordinatorSucceedsOnce(_ change: Change) throws {
            try withVolume(.follower, mounted: false) { volume in
                try volume.mount(coordinatorEnvironment: ["CSVFS_FAULT_EXIT_AFTER_COMMIT": change.rawValue])
                let mount = volume.mountpoint
                if change != .createNode {
                    try writeFile(mount + "/a", [1, 2, 3])
                    #expect(setxattrErrno(mount + "/a", "user.k", [7]) == 0)
                }
                // Each of these fails if run twice: EEXIST, ENOENT, ENODATA.
                switch change {
                case .createNode:
                    let fd = open(mount + "/a", O_CREAT | O_EXCL | O_WRONLY, 0o640)
                    #expect(fd >= 0, "create: errno \(errno)")
                    if fd >= 0 { close(fd) }
                case .rename:
                    #expect(rename(mount + "/a", mount + "/b") == 0, "rename: errno \(errno)")
                case .unlink:
                    #expect(unlink(mount + "/a") == 0, "unlink: errno \(errno)")
                case .link:
                    #expect(link(mount + "/a", mount + "/c") == 0, "link: errno \(errno)")
                case .removeXattr:
                    #expect(removexattrErrno(mount + "/a", "user.k") == 0)
                }
                let coordinatorLog = volume.coordinatorServer?.stderrText ?? ""
                #expect(coordinatorLog.contains("exiting after committing \(change.rawValue)"),
                        "the coordinator did not die at the commit: \(coordinatorLog.suffix(2000))")
                try volume.killCoordinator()

                switch change {
                case .createNode:
                    #expect(try lstatOrThrow(mount + "/a").st_mode & 0o7777 == 0o640)
                case .rename:
                    #expect(statErrno(mount + "/a") == ENOENT)
                    #expect(try readFile(mount + "/b") == [1, 2, 3])
                case .unlink:
                    #expect(statErrno(mount + "/a") == ENOENT)
                case .link:
                    #expect(try lstatOrThrow(mount + "/a").st_nlink == 2)
                    #expect(try readFile(mount + "/c") == [1, 2, 3])
                case .removeXattr:
                    #expect(getxattr(mount + "/a", "user.k") == .failure(SyscallError(call: "getxattr", code: ENODATA)))
                }
                let names = try FileManager.default.contentsOfDirectory(atPath: mount).filter { !$0.hasPrefix(".") }.sorted()
                let expected: [String] = switch change {
                case .createNode, .unlink: change == .createNode ? ["a"] : []
                case .rename: ["b"]
                case .link: ["a", "c"]
                case .removeXattr: ["a"]
                }
                #expect(names == expected)
            }
        }
    }
}
