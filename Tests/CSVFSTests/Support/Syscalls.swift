import Foundation
import Glibc

/// A failed syscall: which call, and its errno.
struct SyscallError: Error, CustomStringConvertible, Equatable {
    let call: String
    let code: Int32
    var description: String { "\(call): \(errnoName(code)) (\(String(cString: strerror(code))))" }
}

/// "ENOENT" for 2, and so on, for readable failures.
func errnoName(_ code: Int32) -> String {
    let names: [Int32: String] = [
        0: "OK", EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", EBADF: "EBADF", EACCES: "EACCES", EEXIST: "EEXIST",
        EXDEV: "EXDEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", EFBIG: "EFBIG", ENOSPC: "ENOSPC",
        EROFS: "EROFS", EMLINK: "EMLINK", ERANGE: "ERANGE", ENAMETOOLONG: "ENAMETOOLONG", ENOTEMPTY: "ENOTEMPTY",
        ELOOP: "ELOOP", ENODATA: "ENODATA", ENOTCONN: "ENOTCONN", EOPNOTSUPP: "EOPNOTSUPP", ENOSYS: "ENOSYS",
        EBUSY: "EBUSY", E2BIG: "E2BIG", ETXTBSY: "ETXTBSY",
    ]
    return names[code] ?? "errno \(code)"
}

/// Runs a call that returns -1 and sets errno on failure; returns 0 on success, else errno.
func errnoOf(_ call: () -> Int32) -> Int32 {
    errno = 0
    return call() == -1 ? errno : 0
}

func errnoOf(_ call: () -> Int) -> Int32 {
    errno = 0
    return call() == -1 ? errno : 0
}

/// Returns the call's result, or throws its errno.
@discardableResult
func sys(_ name: String, _ call: () -> Int32) throws -> Int32 {
    let result = call()
    if result == -1 { throw SyscallError(call: name, code: errno) }
    return result
}

@discardableResult
func sys(_ name: String, _ call: () -> Int) throws -> Int {
    let result = call()
    if result == -1 { throw SyscallError(call: name, code: errno) }
    return result
}

/// Constants that Glibc's Swift module leaves out (it is not built with _GNU_SOURCE), x86_64 Linux values.
enum LinuxFlags {
    static let oDirect: Int32 = 0o40000
    static let renameNoReplace: UInt32 = 1
    static let renameExchange: UInt32 = 2
    static let fallocKeepSize: Int32 = 1
    static let fallocPunchHole: Int32 = 2
    static let xattrCreate: Int32 = 1
    static let xattrReplace: Int32 = 2
    static let utimeNow = (1 << 30) - 1
    static let utimeOmit = (1 << 30) - 2
}

/// libc functions that the Glibc module does not export (GNU extensions and <sys/xattr.h>), bound through dlsym.
enum LibC {
    private static func symbol<T>(_ name: String, as type: T.Type) -> T {
        guard let handle = dlopen(nil, RTLD_NOW), let address = dlsym(handle, name) else {
            fatalError("libc has no \(name)")
        }
        return unsafeBitCast(address, to: type)
    }

    typealias Fallocate = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
    typealias Renameat2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    typealias Syncfs = @convention(c) (Int32) -> Int32
    typealias Getxattr = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int
    typealias Setxattr = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer?, Int, Int32) -> Int32
    typealias Listxattr = @convention(c) (UnsafePointer<CChar>, UnsafeMutablePointer<CChar>?, Int) -> Int
    typealias Removexattr = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>) -> Int32

    static let fallocate = symbol("fallocate", as: Fallocate.self)
    static let renameat2 = symbol("renameat2", as: Renameat2.self)
    static let syncfs = symbol("syncfs", as: Syncfs.self)
    static let lgetxattr = symbol("lgetxattr", as: Getxattr.self)
    static let lsetxattr = symbol("lsetxattr", as: Setxattr.self)
    static let llistxattr = symbol("llistxattr", as: Listxattr.self)
    static let lremovexattr = symbol("lremovexattr", as: Removexattr.self)
}

// MARK: - Thin helpers, each returning errno (0 = success)

func renameErrno(_ from: String, _ to: String, flags: UInt32 = 0) -> Int32 {
    errnoOf { LibC.renameat2(AT_FDCWD, from, AT_FDCWD, to, flags) }
}

func fallocateErrno(_ path: String, mode: Int32, offset: Int, length: Int) -> Int32 {
    let fd = open(path, O_RDWR)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    return errnoOf { LibC.fallocate(fd, mode, off_t(offset), off_t(length)) }
}

func setxattrErrno(_ path: String, _ name: String, _ value: [UInt8], flags: Int32 = 0) -> Int32 {
    errnoOf { value.withUnsafeBytes { LibC.lsetxattr(path, name, $0.baseAddress, $0.count, flags) } }
}

func removexattrErrno(_ path: String, _ name: String) -> Int32 {
    errnoOf { LibC.lremovexattr(path, name) }
}

/// The value of an extended attribute, or its errno.
func getxattr(_ path: String, _ name: String) -> Result<[UInt8], SyscallError> {
    let size = LibC.lgetxattr(path, name, nil, 0)
    guard size >= 0 else { return .failure(SyscallError(call: "getxattr", code: errno)) }
    var buffer = [UInt8](repeating: 0, count: max(size, 1))
    let read = buffer.withUnsafeMutableBytes { LibC.lgetxattr(path, name, $0.baseAddress, size) }
    guard read >= 0 else { return .failure(SyscallError(call: "getxattr", code: errno)) }
    return .success(Array(buffer.prefix(read)))
}

/// The names listxattr returns, or its errno.
func listxattr(_ path: String) -> Result<[String], SyscallError> {
    let size = LibC.llistxattr(path, nil, 0)
    guard size >= 0 else { return .failure(SyscallError(call: "listxattr", code: errno)) }
    var buffer = [CChar](repeating: 0, count: max(size, 1))
    let read = LibC.llistxattr(path, &buffer, size)
    guard read >= 0 else { return .failure(SyscallError(call: "listxattr", code: errno)) }
    let names = buffer.prefix(read).split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    return .success(names)
}

/// lstat, or its errno.
func lstatResult(_ path: String) -> Result<stat, SyscallError> {
    var status = stat()
    guard lstat(path, &status) == 0 else { return .failure(SyscallError(call: "lstat \(path)", code: errno)) }
    return .success(status)
}

func lstatOrThrow(_ path: String) throws -> stat { try lstatResult(path).get() }

func fileType(_ status: stat) -> mode_t { status.st_mode & S_IFMT }

// MARK: - Whole-file helpers (throwing)

/// Creates or truncates `path` and writes `bytes` with as many write calls as it takes.
func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644, fsync doSync: Bool = false) throws {
    let fd = try sys("open \(path)") { open(path, O_WRONLY | O_CREAT | O_TRUNC, mode) }
    defer { close(fd) }
    try writeAll(fd, bytes, at: 0)
    if doSync { try sys("fsync \(path)") { fsync(fd) } }
}

func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int) throws {
    var done = 0
    while done < bytes.count {
        let written = try sys("pwrite") {
            bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
        }
        guard written > 0 else { throw SyscallError(call: "pwrite returned 0", code: EIO) }
        done += written
    }
}

/// Reads the whole file.
func readFile(_ path: String) throws -> [UInt8] {
    let fd = try sys("open \(path)") { open(path, O_RDONLY) }
    defer { close(fd) }
    return try readAll(fd)
}

func readAll(_ fd: Int32) throws -> [UInt8] {
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = try sys("read") { chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }
        if count == 0 { return result }
        result += chunk[0..<count]
    }
}

/// `count` bytes at `offset` (fewer at end of file).
func readRange(_ path: String, offset: Int, count: Int) throws -> [UInt8] {
    let fd = try sys("open \(path)") { open(path, O_RDONLY) }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
        let n = try sys("pread") { buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) } }
        if n == 0 { break }
        done += n
    }
    return Array(buffer.prefix(done))
}

/// The entries readdir returns for `path`, without "." and "..", sorted.
func listDirectory(_ path: String) throws -> [String] {
    try readDirectory(path).map(\.name).filter { $0 != "." && $0 != ".." }.sorted()
}

/// Every readdir entry with its d_type.
func readDirectory(_ path: String) throws -> [(name: String, type: UInt8)] {
    guard let dir = opendir(path) else { throw SyscallError(call: "opendir \(path)", code: errno) }
    defer { closedir(dir) }
    var entries: [(String, UInt8)] = []
    errno = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        entries.append((name, entry.pointee.d_type))
    }
    if errno != 0 { throw SyscallError(call: "readdir \(path)", code: errno) }
    return entries
}

/// Deterministic pseudo-random bytes (SplitMix64), so each test's data is reproducible.
func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &+ 0x9E37_79B9_7F4A_7C15
    var bytes = [UInt8](repeating: 0, count: count)
    var index = 0
    while index < count {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        for shift in stride(from: 0, to: 64, by: 8) where index < count {
            bytes[index] = UInt8(truncatingIfNeeded: z >> UInt64(shift))
            index += 1
        }
    }
    return bytes
}

func readlinkString(_ path: String) throws -> String {
    var buffer = [CChar](repeating: 0, count: 4097)
    let count = try sys("readlink \(path)") { readlink(path, &buffer, 4096) }
    return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func syncfsErrno(_ path: String) -> Int32 {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    return errnoOf { LibC.syncfs(fd) }
}

/// Whether `value` occurs in `bytes` (memchr: fast even in debug builds).
func containsByte(_ bytes: [UInt8], _ value: UInt8) -> Bool {
    bytes.withUnsafeBytes { $0.count > 0 && memchr($0.baseAddress!, Int32(value), $0.count) != nil }
}

/// open(2)'s errno (0 on success; the descriptor is closed again).
func openErrno(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
    let fd = open(path, flags, mode)
    guard fd >= 0 else { return errno }
    close(fd)
    return 0
}

/// stat(2)'s errno (follows symlinks).
func statErrno(_ path: String) -> Int32 {
    var status = stat()
    return errnoOf { stat(path, &status) }
}

/// readlink(2)'s errno.
func readlinkErrno(_ path: String) -> Int32 {
    do {
        _ = try readlinkString(path)
        return 0
    } catch let error as SyscallError {
        return error.code
    } catch {
        return EIO
    }
}

/// Whether `condition` holds within `timeout` seconds, asked every 10 ms: for what the kernel finishes after a
/// call returns (FUSE sends a close's RELEASE after close(2) has returned).
func eventually(_ timeout: TimeInterval = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while try !condition() {
        if Date() >= deadline { return false }
        usleep(10_000)
    }
    return true
}
