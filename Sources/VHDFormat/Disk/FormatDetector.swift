/// Tells VHD, VHDX and anything else apart by content: "vhdxfile" at 0, "conectix" at 0 (sparse VHD)
/// or in the last 512 (or, for old images, 511) bytes (fixed VHD).
enum FormatDetector {
    static func detect(_ file: ImageFile) throws -> ImageFormat? {
        let size = try file.size()
        if size >= 8 {
            let head = try file.read(at: 0, count: 8, what: "signature")
            if head == VHDXLayer.signature { return .vhdx }
            if head == VHDFooter.cookie { return .vhd }
        }
        if size >= 512 {
            let tail = try file.read(at: size - 512, count: 512, what: "VHD footer")
            if VHDFooter.hasCookie(tail) || VHDFooter.hasCookie(Array(tail[1...])) { return .vhd }
        }
        return nil
    }

    static func openLayer(_ file: ImageFile, format: ImageFormat?, strict: Bool = true) throws -> any ImageLayer {
        guard let format = try format ?? detect(file) else { throw VHDError.unrecognizedFormat(path: file.path) }
        switch format {
        case .vhd: return try VHDLayer(file: file, strict: strict)
        case .vhdx: return try VHDXLayer(file: file, strict: strict)
        case .raw: return try RawLayer(file: file)
        }
    }
}
