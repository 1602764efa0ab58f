extension DiskFacts {
    /// The facts as CSVFS shows them in extended attributes (`user.vhd.*`), name and value, in a stable order.
    /// Only facts the image has are listed.
    public var extendedAttributes: [(name: String, value: String)] {
        var attributes: [(String, String)] = [
            ("user.vhd.format", format.rawValue),
            ("user.vhd.type", type.rawValue),
            ("user.vhd.virtual_size", String(virtualSize)),
            ("user.vhd.logical_sector_size", String(logicalSectorSize)),
            ("user.vhd.physical_sector_size", String(physicalSectorSize)),
        ]
        if blockSize > 0 { attributes.append(("user.vhd.block_size", String(blockSize))) }
        if !creator.isEmpty { attributes.append(("user.vhd.creator", creator)) }
        if !identity.isEmpty { attributes.append(("user.vhd.identity", identity)) }
        if let diskIdentifier { attributes.append(("user.vhd.disk_id", diskIdentifier)) }
        if let parent {
            attributes.append(("user.vhd.parent_identity", parent.identity))
            if let first = parent.locators.first { attributes.append(("user.vhd.parent_locator", first.path)) }
        }
        return attributes
    }
}

extension DiskChainFacts {
    /// The image's own attributes, then the chain's: `user.vhd.parent` (the parent as found),
    /// `user.vhd.parent_identity_ok` (yes or no), `user.vhd.chain_depth` (1 without a parent) and
    /// `user.vhd.error` when the image is damaged or its chain is broken. A damaged image still
    /// names its format, so tools see it is an image that needs attention.
    public var extendedAttributes: [(name: String, value: String)] {
        var attributes = facts?.extendedAttributes ?? [("user.vhd.format", format.rawValue)]
        if let parentPath { attributes.append(("user.vhd.parent", parentPath)) }
        if let parentIdentityMatches { attributes.append(("user.vhd.parent_identity_ok", parentIdentityMatches ? "yes" : "no")) }
        if let chainDepth { attributes.append(("user.vhd.chain_depth", String(chainDepth))) }
        if let error { attributes.append(("user.vhd.error", error)) }
        return attributes
    }
}
