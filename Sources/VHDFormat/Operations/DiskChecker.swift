/// What `check` found in one image, and what `--repair` fixed.
public struct CheckReport: Sendable, Codable, Equatable {
    public var path: String
    public var format: ImageFormat
    public var problems: [String]
    public var repairs: [String]
    public var isClean: Bool { problems.isEmpty }
}

/// Checks headers, checksums, region tables, metadata, BAT placement (in range, not overlapping),
/// bitmaps, the log, and the parent link; repairs what can be repaired without guessing data.
public enum DiskChecker {
    public static func check(_ path: String, repair: Bool = false) throws -> CheckReport {
        var report = try inspect(path)
        guard repair, !report.isClean else { return report }
        var repairs: [String] = []
        let file = try ImageFile(path: path, writable: true)
        switch report.format {
        case .vhd:
            let layer = try VHDLayer(file: file, strict: false)
            let dropped = layer.dropBadEntries()
            if dropped > 0 { repairs.append("unallocated \(dropped) bad BAT entries") }
            if report.problems.contains(where: { $0.contains("footer") }) {
                try layer.rewriteFooters()
                repairs.append("rewrote the footers")
            }
            try layer.close()
        case .vhdx:
            let layer = try VHDXLayer(file: file, strict: false)
            if layer.logReplayed { repairs.append("replayed the log") }
            let dropped = try layer.dropBadEntries()
            if dropped > 0 { repairs.append("unallocated \(dropped) bad BAT entries") }
            if report.problems.contains(where: { $0.contains("header") || $0.contains("region table") }) {
                try layer.repairRedundantCopies()
                repairs.append("rewrote the region tables and the stale header")
            }
            try layer.close()
        case .raw:
            break
        }
        report = try inspect(path)
        report.repairs = repairs
        return report
    }

    private static func inspect(_ path: String) throws -> CheckReport {
        let file = try ImageFile(path: path, writable: false)
        guard let format = try FormatDetector.detect(file) else { throw VHDError.unrecognizedFormat(path: path) }
        var problems: [String] = []
        let layer = try FormatDetector.openLayer(file, format: format, strict: false)
        if let vhd = layer as? VHDLayer {
            problems += vhd.problems
            if vhd.isSparse {
                let head = try file.read(at: 0, count: VHDFooter.size, what: "VHD footer copy")
                if let copy = try? VHDFooter(parsing: head, path: path, where: "footer copy at 0") {
                    if copy != vhd.footer { problems.append("VHD footer copy at 0 differs from the footer at the end") }
                } else if !problems.contains(where: { $0.contains("copy at offset 0") }) {
                    problems.append("VHD footer copy at 0 is damaged")
                }
            }
        }
        if let vhdx = layer as? VHDXLayer {
            problems += vhdx.problems
            if vhdx.logReplayed { problems.append("VHDX log holds unreplayed entries (replayed in memory; --repair writes them)") }
        }
        if layer.facts.parent != nil {
            do {
                _ = try VirtualDisk.open(path)
            } catch let error as VHDError {
                problems.append("parent: \(error.description)")
            }
        }
        return CheckReport(path: path, format: format, problems: problems, repairs: [])
    }
}
