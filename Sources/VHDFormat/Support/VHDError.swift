#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Everything that can go wrong when reading, writing or creating an image.
/// Each case names the problem so an admin can act on it without a debugger.
public enum VHDError: Error, Equatable, CustomStringConvertible {
    case io(path: String, operation: String, errno: Int32)
    case unrecognizedFormat(path: String)
    case truncated(path: String, what: String, needed: UInt64, fileSize: UInt64)
    case badSignature(path: String, what: String)
    case badChecksum(path: String, what: String)
    case corrupt(path: String, problem: String)
    case unsupported(path: String, feature: String)
    case parentMissing(child: String, tried: [String])
    case parentMismatch(child: String, parent: String, expected: String, found: String)
    case parentLoop(path: String)
    case chainTooDeep(path: String, limit: Int)
    case outOfRange(offset: UInt64, length: UInt64, size: UInt64)
    case readOnly(path: String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .io(path, operation, errno):
            return "\(path): \(operation) failed: \(String(cString: strerror(errno)))"
        case let .unrecognizedFormat(path):
            return "\(path): not a VHD or VHDX image (no 'conectix' footer, no 'vhdxfile' signature)"
        case let .truncated(path, what, needed, fileSize):
            return "\(path): truncated: \(what) needs \(needed) bytes but the file has \(fileSize)"
        case let .badSignature(path, what):
            return "\(path): bad signature in \(what)"
        case let .badChecksum(path, what):
            return "\(path): wrong checksum in \(what)"
        case let .corrupt(path, problem):
            return "\(path): corrupt: \(problem)"
        case let .unsupported(path, feature):
            return "\(path): unsupported: \(feature)"
        case let .parentMissing(child, tried):
            return "\(child): parent not found (tried: \(tried.isEmpty ? "no locator" : tried.joined(separator: ", ")))"
        case let .parentMismatch(child, parent, expected, found):
            return "\(child): parent \(parent) has identity \(found) but the child expects \(expected)"
        case let .parentLoop(path):
            return "\(path): parent chain loops back to an image already in the chain"
        case let .chainTooDeep(path, limit):
            return "\(path): parent chain deeper than \(limit) images"
        case let .outOfRange(offset, length, size):
            return "access of \(length) bytes at \(offset) is beyond the virtual disk size \(size)"
        case let .readOnly(path):
            return "\(path): image is open read-only"
        case let .invalidArgument(message):
            return message
        }
    }
}
