@testable import CSVFS
import Foundation
import Testing

struct SuperblockTests {
    @Test func roundTrips() throws {
        var block = try Superblock.layout(volumeSize: 1 << 30, label: "vm-store")
        block.epoch = 7
        let decoded = try Superblock.decode(block.encoded())
        #expect(decoded == block)
        #expect(decoded.metadataRegion.databaseCapacity > 0)
        #expect(decoded.dataOffset + decoded.dataLength <= decoded.volumeSize)
    }

    @Test func rejectsDamage() throws {
        let bytes = try Superblock.layout(volumeSize: 1 << 30).encoded()
        var flipped = bytes
        flipped[40] ^= 0x01
        #expect(throws: VolumeError.corruptSuperblock("checksum mismatch")) { try Superblock.decode(flipped) }
        #expect(throws: VolumeError.notCSVFS) { try Superblock.decode([UInt8](repeating: 0, count: Superblock.size)) }
        #expect(throws: VolumeError.notCSVFS) { try Superblock.decode(Array(bytes.prefix(100))) }
    }

    /// A valid checksum over impossible geometry is still refused: the CRC vouches for bytes, not for sense.
    @Test func rejectsImpossibleGeometryWithValidChecksum() throws {
        var block = try Superblock.layout(volumeSize: 1 << 30)
        block.dataLength = block.volumeSize * 2
        #expect(throws: VolumeError.corruptSuperblock("impossible geometry")) { try Superblock.decode(block.encoded()) }
    }

    @Test func refusesTinyVolumes() {
        #expect(throws: VolumeError.tooSmall(1 << 20)) { try Superblock.layout(volumeSize: 1 << 20) }
    }

    @Test func crc32cKnownAnswer() {
        // The standard check value of CRC-32C (RFC 3720).
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }
}
