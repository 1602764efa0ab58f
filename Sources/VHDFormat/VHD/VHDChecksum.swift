/// VHD checksum: one's complement of the byte sum, with the checksum field itself counted as zero.
enum VHDChecksum {
    static func compute(_ bytes: [UInt8], fieldOffset: Int) -> UInt32 {
        var sum: UInt32 = 0
        for (index, byte) in bytes.enumerated() where !(fieldOffset..<fieldOffset + 4).contains(index) {
            sum &+= UInt32(byte)
        }
        return ~sum
    }
}
