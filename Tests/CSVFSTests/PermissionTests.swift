import Foundation
import Glibc
import Testing
import TestSupport

/// default_permissions: the kernel checks modes for other users (allow_other lets them in at all).
extension Mounted {
    @Suite struct PermissionTests {
        /// Runs `script` with sh as uid/gid 65534 and no supplementary groups.
        static func asNobody(_ script: String) throws -> ProcessResult {
            try runProcess("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                                "/bin/sh", "-c", script], timeout: 30)
        }

        @Test func otherUserGetsEACCESOnPrivateEntries() throws {
            try withVolume { volume in
                try sys("mkdir") { mkdir(volume.path("private"), 0o700) }
                try writeFile(volume.path("private/inside"), Array("hidden".utf8), mode: 0o644)
                try writeFile(volume.path("secret"), Array("secret".utf8), mode: 0o600)
                try writeFile(volume.path("public"), Array("public".utf8), mode: 0o644)
                try sys("chmod") { chmod(volume.path("public"), 0o644) }
                try sys("chmod") { chmod(volume.path("secret"), 0o600) }
                try sys("chmod") { chmod(volume.mountpoint, 0o755) }

                // The control: the other user can enter the mount and read a world-readable file.
                let control = try Self.asNobody("id -u && cat '\(volume.path("public"))'")
                #expect(control.succeeded, "\(control)")
                #expect(control.stdout == "65534\npublic")

                for (what, script) in [
                    ("read a 0600 file", "cat '\(volume.path("secret"))'"),
                    ("list a 0700 directory", "ls '\(volume.path("private"))'"),
                    ("read through a 0700 directory", "cat '\(volume.path("private/inside"))'"),
                    ("write a 0644 file", "echo x >> '\(volume.path("public"))'"),
                    ("create in a 0755 directory", "touch '\(volume.path("new"))'"),
                    ("remove from a 0755 directory", "rm -f '\(volume.path("public"))'"),
                ] {
                    let result = try Self.asNobody(script)
                    #expect(!result.succeeded, "\(what) should fail")
                    #expect(result.stderr.contains("Permission denied"), "\(what): \(result.stderr)")
                }
                #expect(try readFile(volume.path("public")) == Array("public".utf8))
                #expect(errnoOf { access(volume.path("new"), F_OK) } == ENOENT)
            }
        }

        @Test func setgidDirectoriesAndSuidClearing() throws {
            try withVolume { volume in
                // New entries in a setgid directory take its group; subdirectories inherit the bit.
                try sys("mkdir") { mkdir(volume.path("sg"), 0o755) }
                try sys("chown") { chown(volume.path("sg"), 0, 1234) }
                try sys("chmod") { chmod(volume.path("sg"), 0o2775) }
                try sys("mkdir") { mkdir(volume.path("sg/sub"), 0o755) }
                try writeFile(volume.path("sg/file"), [])
                let sub = try lstatOrThrow(volume.path("sg/sub")), file = try lstatOrThrow(volume.path("sg/file"))
                #expect(sub.st_gid == 1234 && sub.st_mode & S_ISGID != 0, "subdirectory: gid \(sub.st_gid) mode \(String(sub.st_mode, radix: 8))")
                #expect(file.st_gid == 1234, "file in a setgid directory: gid \(file.st_gid)")

                // A write by another user clears the set-user-ID bit.
                try writeFile(volume.path("suid"), [])
                try sys("chmod") { chmod(volume.path("suid"), 0o4777) }
                let write = try Self.asNobody("echo x >> '\(volume.path("suid"))'")
                #expect(write.succeeded, "\(write)")
                #expect(try lstatOrThrow(volume.path("suid")).st_mode & 0o7777 == 0o777, "S_ISUID cleared by the write")
                #expect(try readFile(volume.path("suid")) == Array("x\n".utf8))

                // Sticky directory: others may not delete root's file in it.
                try sys("mkdir") { mkdir(volume.path("sticky"), 0o777) }
                try sys("chmod") { chmod(volume.path("sticky"), 0o1777) }
                try writeFile(volume.path("sticky/roots"), [], mode: 0o666)
                let remove = try Self.asNobody("rm -f '\(volume.path("sticky/roots"))'")
                #expect(!remove.succeeded && remove.stderr.contains("Operation not permitted"), "\(remove)")
                #expect(errnoOf { access(volume.path("sticky/roots"), F_OK) } == 0)
            }
        }

        @Test func ownershipAndGroupGrantAccess() throws {
            try withVolume { volume in
                try sys("mkdir") { mkdir(volume.path("shared"), 0o770) }
                try sys("chown") { chown(volume.path("shared"), 0, 65534) }
                try sys("chmod") { chmod(volume.path("shared"), 0o770) }
                try sys("mkdir") { mkdir(volume.path("theirs"), 0o700) }
                try sys("chown") { chown(volume.path("theirs"), 65534, 65534) }

                let result = try Self.asNobody("""
                    echo group > '\(volume.path("shared/by-group"))' && echo owner > '\(volume.path("theirs/by-owner"))'
                    """)
                #expect(result.succeeded, "\(result)")
                let created = try lstatOrThrow(volume.path("theirs/by-owner"))
                #expect(created.st_uid == 65534 && created.st_gid == 65534, "new files belong to their creator")
                #expect(try readFile(volume.path("shared/by-group")) == Array("group\n".utf8))

                // Dropping the group's write bit takes the right away again.
                try sys("chmod") { chmod(volume.path("shared"), 0o750) }
                let denied = try Self.asNobody("touch '\(volume.path("shared/again"))'")
                #expect(!denied.succeeded && denied.stderr.contains("Permission denied"), "\(denied)")
                // chmod of someone else's file is EPERM for them.
                let chmodOther = try Self.asNobody("chmod 777 '\(volume.path("shared"))'")
                #expect(!chmodOther.succeeded && chmodOther.stderr.contains("Operation not permitted"), "\(chmodOther)")
            }
        }
    }
}
