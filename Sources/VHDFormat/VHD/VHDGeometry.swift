/// The CHS geometry of the VHD specification's appendix (the same algorithm as qemu and Virtual PC).
enum VHDGeometry {
    /// The largest geometry; a footer holding it tells readers to trust the current size instead.
    static let maximum = CHSGeometry(cylinders: 65535, heads: 16, sectorsPerTrack: 255)

    static func forSize(_ bytes: UInt64) -> CHSGeometry {
        var totalSectors = bytes / 512
        if totalSectors > 65535 * 16 * 255 { totalSectors = 65535 * 16 * 255 }
        var sectorsPerTrack: UInt64, heads: UInt64, cylinderTimesHeads: UInt64
        if totalSectors >= 65535 * 16 * 63 {
            sectorsPerTrack = 255
            heads = 16
            cylinderTimesHeads = totalSectors / sectorsPerTrack
        } else {
            sectorsPerTrack = 17
            cylinderTimesHeads = totalSectors / sectorsPerTrack
            heads = max((cylinderTimesHeads + 1023) / 1024, 4)
            if cylinderTimesHeads >= heads * 1024 || heads > 16 {
                sectorsPerTrack = 31
                heads = 16
                cylinderTimesHeads = totalSectors / sectorsPerTrack
            }
            if cylinderTimesHeads >= heads * 1024 {
                sectorsPerTrack = 63
                heads = 16
                cylinderTimesHeads = totalSectors / sectorsPerTrack
            }
        }
        let cylinders = min(cylinderTimesHeads / heads, 65535)
        return CHSGeometry(cylinders: UInt16(cylinders), heads: UInt8(heads), sectorsPerTrack: UInt8(sectorsPerTrack))
    }

    /// The geometry to store for an image of exactly `bytes`: the real one when it describes the size
    /// exactly, otherwise the maximum, which makes every reader (qemu included) use the current size.
    static func forExactSize(_ bytes: UInt64) -> CHSGeometry {
        let geometry = forSize(bytes)
        return geometry.byteCount == bytes ? geometry : maximum
    }
}
