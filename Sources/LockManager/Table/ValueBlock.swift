/// A lock value block: a small byte block attached to a resource.
/// `valid == false` means a holder that could have changed it died, so its content cannot be trusted.
public struct ValueBlock: Hashable, Sendable, CustomStringConvertible {
    public static let maxSize = 64
    public var bytes: [UInt8]
    public var valid: Bool
    public init(bytes: [UInt8] = [], valid: Bool = true) {
        self.bytes = Array(bytes.prefix(ValueBlock.maxSize))
        self.valid = valid
    }
    public static let empty = ValueBlock()
    public var description: String { valid ? "lvb\(bytes)" : "lvb(invalid)" }
}
