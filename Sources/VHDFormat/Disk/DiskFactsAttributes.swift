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
