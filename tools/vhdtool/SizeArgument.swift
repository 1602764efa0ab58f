import ArgumentParser

/// A byte count with an optional binary suffix: 512, 64K, 10M, 1G, 2T.
struct SizeArgument: ExpressibleByArgument {
    var bytes: UInt64

    init?(argument: String) {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var text = argument.uppercased()
        if text.hasSuffix("B"), text.count > 1, units[text[text.index(before: text.index(before: text.endIndex))]] != nil {
            text.removeLast()
        }
        var multiplier: UInt64 = 1
        if let last = text.last, let unit = units[last] {
            multiplier = unit
            text.removeLast()
        }
        guard let value = UInt64(text) else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { return nil }
        bytes = product
    }
}
