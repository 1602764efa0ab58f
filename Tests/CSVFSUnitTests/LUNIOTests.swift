@testable import CSVFS
import CSVFSSystem
import Foundation
import Glibc
import Testing

/// Both LUN I/O engines on an O_DIRECT file: many transfers at once (more than the AIO context holds), and
/// errors reaching the caller as their errno.
@Suite(.serialized)
final class LUNIOTests {
    let path: String
    let direct: FileDescriptor
    let buffered: FileDescriptor
    static let blocks = 600

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-lunio-\(UUID().uuidString)").path
        buffered = try FileDescriptor.open(path, O_RDWR | O_CREAT)
        try #require(ftruncate(buffered.rawValue, off_t(Self.blocks * 4096)) == 0)
        direct = try #require(FileDescriptor.openDirect(path, O_RDWR), "O_DIRECT on the test directory's file system")
    }

    deinit {
        direct.close()
        buffered.close()
        unlink(path)
    }

    func engine(_ mode: LUNIOMode) throws -> any LUNIO {
        switch mode {
        case .aio: return try AIOEngine(fd: direct, wakeFD: buffered)
        case .threads: return ThreadedLUNIO(fd: direct)
        }
    }

    @Test(arguments: LUNIOMode.allCases)
    func manyTransfersAtOnce(mode: LUNIOMode) throws {
        let io = try engine(mode)
        defer { io.close() }
        let source = AlignedBuffer(capacity: Self.blocks * 4096)
        for block in 0..<Self.blocks { memset(source.pointer + block * 4096, Int32(block % 251) + 1, 4096) }
        // Every block its own transfer, in reverse order: more than the AIO context's depth in one call.
        try io.perform((0..<Self.blocks).reversed().map {
            .write(from: source.pointer + $0 * 4096, count: 4096, at: Int64($0 * 4096))
        })
        let target = AlignedBuffer(capacity: Self.blocks * 4096)
        try io.perform((0..<Self.blocks).map { .read(into: target.pointer + $0 * 4096, count: 4096, at: Int64($0 * 4096)) })
        #expect(memcmp(source.pointer, target.pointer, Self.blocks * 4096) == 0)
        let onFile = try buffered.read(count: 4096, at: 599 * 4096)
        #expect(onFile == [UInt8](repeating: UInt8(599 % 251 + 1), count: 4096))
    }

    @Test(arguments: LUNIOMode.allCases)
    func errorsReachTheCallerAsTheirErrno(mode: LUNIOMode) throws {
        let io = try engine(mode)
        defer { io.close() }
        let buffer = AlignedBuffer(capacity: 8192)
        // O_DIRECT refuses a write at a misaligned offset (ext4 here serves a misaligned read buffered itself):
        // EINVAL, also beside a transfer that succeeds, and no buffered retry that would succeed.
        #expect(throws: Errno.invalid) {
            try io.perform([.read(into: buffer.pointer, count: 4096, at: 0), .write(from: buffer.pointer, count: 4096, at: 4095)])
        }
        // Past the end of the file a read comes back short: EIO.
        #expect(throws: Errno.io) { try io.perform([.read(into: buffer.pointer, count: 8192, at: Int64(Self.blocks - 1) * 4096)]) }
        // The engine still works after errors.
        try io.perform([.read(into: buffer.pointer, count: 4096, at: 0)])
    }
}
