#if canImport(Glibc)
import Glibc
#endif
import VHDFormat

/// Fuzzer input is a sparse image: a little-endian u64 file size (capped), then chunks of
/// (u64 offset, u32 length, bytes). A 4 MiB VHDX is a few KiB this way, so seeds stay small and
/// mutations land on structures rather than on zero padding.
private let maximumFileSize: UInt64 = 64 << 20

private func readLittleEndian<T: FixedWidthInteger>(_: T.Type, _ bytes: UnsafeRawBufferPointer, _ offset: inout Int) -> T? {
    guard offset + MemoryLayout<T>.size <= bytes.count else { return nil }
    var value: T = 0
    for index in (0..<MemoryLayout<T>.size).reversed() { value = value << 8 | T(bytes[offset + index]) }
    offset += MemoryLayout<T>.size
    return value
}

private func materialize(_ input: UnsafeRawBufferPointer, at path: String) -> Bool {
    var cursor = 0
    guard let claimed = readLittleEndian(UInt64.self, input, &cursor) else { return false }
    let size = claimed % maximumFileSize
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    guard ftruncate(fd, off_t(size)) == 0 else { return false }
    while let offset = readLittleEndian(UInt64.self, input, &cursor), let length = readLittleEndian(UInt32.self, input, &cursor) {
        let count = min(Int(length), input.count - cursor)
        guard offset < size, count > 0 else { break }
        let clipped = min(count, Int(size - offset))
        _ = pwrite(fd, input.baseAddress! + cursor, clipped, off_t(offset))
        cursor += count
    }
    return true
}

private func exercise(_ path: String) {
    if let disk = try? VirtualDisk.open(path) {
        _ = disk.chain
        if let map = try? disk.allocationMap() {
            for range in map.prefix(16) {
                _ = try? disk.read(at: range.offset, count: Int(min(range.length, 65536)))
            }
        }
        let last = disk.virtualSize > 4096 ? disk.virtualSize - 4096 : 0
        _ = try? disk.read(at: last, count: Int(min(disk.virtualSize, 4096)))
    }
    _ = try? DiskChecker.check(path)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = "/dev/shm/vhd-fuzz-\(getpid()).img"
    if materialize(UnsafeRawBufferPointer(start: data, count: size), at: path) { exercise(path) }
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point under the module's own name instead of `main`, so the
/// libFuzzer driver is started from here.
@_cdecl("vhd_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var count = argc
    var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return runFuzzerDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
