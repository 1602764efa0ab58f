/// Arithmetic on values read from an image. Damaged bytes are untrusted input: an overflow, an
/// underflow, a backwards range, a conversion to `Int` or an allocation sized by them would trap and
/// kill the process (the filesystem daemon included). Every such computation goes through these
/// helpers, which throw a `VHDError` naming the image and the field instead.
struct CheckedImageMath {
    /// The image the values come from, named in every error.
    let path: String

    /// Largest table (BAT, metadata region, log) read into memory: a 64 TiB VHDX with 1 MiB blocks
    /// has a 512 MiB BAT; anything larger is refused before it is allocated.
    static let maximumTableBytes: UInt64 = 1 << 30

    private func corrupt(_ problem: String) -> VHDError { .corrupt(path: path, problem: problem) }

    func sum(_ a: UInt64, _ b: UInt64, _ field: @autoclosure () -> String) throws -> UInt64 {
        let (result, overflow) = a.addingReportingOverflow(b)
        guard !overflow else { throw corrupt("\(field()): \(a) + \(b) overflows 64 bits") }
        return result
    }

    func product(_ a: UInt64, _ b: UInt64, _ field: @autoclosure () -> String) throws -> UInt64 {
        let (result, overflow) = a.multipliedReportingOverflow(by: b)
        guard !overflow else { throw corrupt("\(field()): \(a) * \(b) overflows 64 bits") }
        return result
    }

    func difference(_ a: UInt64, _ b: UInt64, _ field: @autoclosure () -> String) throws -> UInt64 {
        guard a >= b else { throw corrupt("\(field()): \(a) - \(b) is negative") }
        return a - b
    }

    /// `value` rounded up to a multiple of `alignment` (non-zero).
    func alignedUp(_ value: UInt64, to alignment: UInt64, _ field: @autoclosure () -> String) throws -> UInt64 {
        let remainder = value % alignment
        return remainder == 0 ? value : try sum(value, alignment - remainder, field())
    }

    /// `offset..<offset+length` of a structure that must lie inside the file of `fileSize` bytes.
    func rangeInFile(_ field: @autoclosure () -> String, offset: UInt64, length: UInt64,
                     fileSize: UInt64) throws -> Range<UInt64> {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow else { throw corrupt("\(field()) at \(offset) (\(length) bytes) ends past 2^64") }
        guard end <= fileSize else { throw VHDError.truncated(path: path, what: field(), needed: end, fileSize: fileSize) }
        return offset..<end
    }

    /// `offset..<offset+length` of an item that must lie inside a region (`container`) of `limit` bytes.
    func range(_ field: @autoclosure () -> String, offset: UInt64, length: UInt64, within limit: UInt64,
               of container: String) throws -> Range<UInt64> {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= limit else {
            throw corrupt("\(field()) at \(offset) (\(length) bytes) lies outside the \(container) (\(limit) bytes)")
        }
        return offset..<end
    }

    /// A count or byte size from the image about to size an allocation or a loop: at most `limit`
    /// (the file size, a region's size, or a sane bound of the format).
    func count(_ value: UInt64, atMost limit: UInt64, _ field: @autoclosure () -> String) throws -> Int {
        guard value <= limit, value <= UInt64(Int.max) else {
            throw corrupt("\(field()) of \(value) is more than the \(limit) the image can hold")
        }
        return Int(value)
    }
}
