/// The six classic DLM lock modes (VMS / Linux fs/dlm), ordered from weakest to strongest.
public enum LockMode: UInt8, Sendable, CaseIterable, Comparable, CustomStringConvertible {
    case nl = 0, cr, cw, pr, pw, ex

    public static func < (a: LockMode, b: LockMode) -> Bool { a.rawValue < b.rawValue }

    // Rows: granted, columns: requested (symmetric). Straight from the standard matrix.
    private static let matrix: [[Bool]] = [
        //  NL    CR     CW     PR     PW     EX
        [true, true, true, true, true, true],       // NL
        [true, true, true, true, true, false],      // CR
        [true, true, true, false, false, false],    // CW
        [true, true, false, true, false, false],    // PR
        [true, true, false, false, false, false],   // PW
        [true, false, false, false, false, false],  // EX
    ]

    public func isCompatible(with other: LockMode) -> Bool {
        LockMode.matrix[Int(rawValue)][Int(other.rawValue)]
    }

    /// Modes that may write the lock value block when they are released or down-converted.
    public var writesValueBlock: Bool { self == .pw || self == .ex }

    public var description: String {
        switch self {
        case .nl: "NL"
        case .cr: "CR"
        case .cw: "CW"
        case .pr: "PR"
        case .pw: "PW"
        case .ex: "EX"
        }
    }

    public init?(name: String) {
        guard let m = LockMode.allCases.first(where: { $0.description == name.uppercased() }) else { return nil }
        self = m
    }
}
