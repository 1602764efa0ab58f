import ClusterTransport
import CSVFS
import Foundation
import Primitives
import Glibc

/// The cluster secret of one volume, kept in a file on each host and never on the LUN: whoever can read the
/// LUN must not be able to join. `csvfs format` makes it; the admin copies the file to every other host
/// (`scp -p`, configuration management), as with corosync's authkey.
///
/// The file holds 32 random bytes as 64 hex digits and a newline, so it survives copy and paste. It must be
/// readable by its owner only, as ssh insists of a private key: a secret others can read is refused.
public enum ClusterSecretFile {
    public static let directory = "/etc/csvfs"
    static let length = 32

    /// Where the secret of the volume `uuid` lives unless `--secret-file` says otherwise.
    public static func defaultPath(volume uuid: UUID) -> String {
        "\(directory)/\(uuid.uuidString.lowercased()).secret"
    }

    /// Writes a new random secret to `path` (mode 0600), replacing any file there; makes the directory
    /// (mode 0700) when missing.
    public static func create(at path: String) throws -> ClusterSecret {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let text = bytes.map { String(format: "%02x", $0) }.joined() + "\n"
        let parent = PathText.directory(of: path)
        if !parent.isEmpty {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        // Written beside, then renamed, so a reader never sees half a secret.
        let temporary = path + ".new"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SecretError("cannot create \(temporary): \(Errno.current)") }
        let written = text.withCString { write(fd, $0, strlen($0)) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == text.utf8.count, synced, rename(temporary, path) == 0 else {
            let error = Errno.current
            unlink(temporary)
            throw SecretError("cannot write \(path): \(error)")
        }
        return ClusterSecret(bytes: bytes)
    }

    public static func read(from path: String) throws -> ClusterSecret {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw SecretError("cannot read the cluster secret \(path): \(Errno.current) "
                              + "(copy it from a host that has it, or name it with --secret-file)")
        }
        guard status.st_mode & 0o077 == 0 else {
            throw SecretError("the cluster secret \(path) is readable by others (mode \(String(status.st_mode & 0o777, radix: 8))): chmod 600 it")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SecretError("cannot read the cluster secret \(path): \(Errno.current)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.count == length * 2, let bytes = hexBytes(text) else {
            throw SecretError("\(path) is not a cluster secret (expected \(length * 2) hex digits)")
        }
        return ClusterSecret(bytes: bytes)
    }

    private static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}

public struct SecretError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
