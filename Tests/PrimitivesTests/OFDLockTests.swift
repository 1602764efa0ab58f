import Foundation
import Glibc
import Primitives
import Testing

/// OFD locks between two open file descriptions of one file, as two processes (or a mount and a
/// coordination node) would hold them.
@Suite struct OFDLockTests {
    @Test func aLockConflictsOnlyWithOtherDescriptionsAndOnlyInItsRange() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ofd-\(UUID().uuidString)").path
        defer { unlink(path) }
        let first = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600), second = open(path, O_RDWR | O_CLOEXEC)
        try #require(first >= 0 && second >= 0)
        defer { close(first) }

        #expect(try OFDLock.tryWriteLock(first, 100..<110))
        #expect(try OFDLock.tryWriteLock(first, 105..<106), "a description's own locks never block it")
        #expect(try OFDLock.conflictingLock(first, 0..<1000) == nil, "nor count as another's")
        #expect(try OFDLock.tryWriteLock(second, 109..<120) == false)
        #expect(try OFDLock.conflictingLock(second, 0..<1000) == 100..<110)
        #expect(try OFDLock.tryWriteLock(second, 110..<120), "the byte after the range is free")
        #expect(try OFDLock.tryWriteLock(second, 90..<100), "and the byte before it")

        try OFDLock.unlock(first, 100..<110)
        #expect(try OFDLock.conflictingLock(second, 100..<110) == nil)
        #expect(try OFDLock.tryWriteLock(second, 100..<110))
        #expect(try OFDLock.conflictingLock(first, 0..<1000) == 90..<120, "the kernel merges one owner's adjacent locks")
        close(second)
        #expect(try OFDLock.conflictingLock(first, 0..<1000) == nil, "closing the description drops its locks")
    }

    @Test func aBadDescriptorIsAnErrorNotAnAnswer() {
        #expect(throws: OFDLock.Failure.self) { try OFDLock.tryWriteLock(-1, 0..<1) }
        #expect(throws: OFDLock.Failure.self) { try OFDLock.conflictingLock(-1, 0..<1) }
    }

    @Test func crc32cKnownAnswers() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        var header = Array("123456789".utf8) + [0xAA, 0xBB, 0xCC, 0xDD]
        #expect(CRC32C.checksum(header, zeroingFieldAt: 9) == CRC32C.checksum(Array("123456789".utf8) + [0, 0, 0, 0]))
        header[0] ^= 1
        #expect(CRC32C.checksum(header, zeroingFieldAt: 9) != CRC32C.checksum(Array("123456789".utf8) + [0, 0, 0, 0]))
    }
}
