/// What one image file says about itself, with what it accepts as its parent's identity: enough to walk
/// and check a chain without keeping the image open.
public struct ImageLayerFacts: Sendable, Equatable {
    public var facts: DiskFacts
    /// VHD: the parent's unique id. VHDX: parent_linkage, and parent_linkage2 when present.
    public var acceptedParentIdentities: [String]

    init(_ layer: any ImageLayer) {
        facts = layer.facts
        var accepted = facts.parent.map { [$0.identity] } ?? []
        if let vhdx = layer as? VHDXLayer, let alternative = vhdx.metadata.parentValue("parent_linkage2") {
            accepted.append(alternative)
        }
        acceptedParentIdentities = accepted
    }

    /// The format of the image in `storage`, told by its content; nil when it is neither VHD nor VHDX.
    /// Reads the first 8 and the last 512 bytes only.
    public static func detectFormat(_ storage: any ImageStorage, path: String) throws -> ImageFormat? {
        try FormatDetector.detect(ImageFile(storage: storage, path: path))
    }

    /// Parses the image's structures (read-only: an unreplayed VHDX log is replayed in memory only).
    public init(storage: any ImageStorage, path: String, format: ImageFormat) throws {
        self.init(try FormatDetector.openLayer(ImageFile(storage: storage, path: path), format: format))
    }

    public func accepts(parentIdentity found: String) -> Bool {
        acceptedParentIdentities.contains { candidate in
            if let a = GUID(mixedEndianString: candidate), let b = GUID(mixedEndianString: found) { return a == b }
            return candidate.lowercased() == found.lowercased()
        }
    }
}

/// Where a chain's parents are found when they are not to be opened as host files.
public protocol ImageNamespace {
    /// The image at `path` (a lexically normalised absolute path), nil when no regular file is there.
    /// Throws when a file is there but cannot be read as an image.
    func image(at path: String) throws -> (facts: ImageLayerFacts, fileIdentity: UInt64)?
}

/// Where a chain's images are opened when they are not host files (CSVFS reads its own through its data path).
public protocol ImageStorageNamespace {
    /// The image file at `path` (a lexically normalised absolute path), opened read-only, with what identifies
    /// the file; nil when no regular file is there.
    func storage(at path: String) throws -> (storage: any ImageStorage, fileIdentity: UInt64)?
}

/// An image with what its chain of parents turned out to be: what CSVFS shows as `user.vhd.*`.
public struct DiskChainFacts: Sendable, Equatable {
    /// The format the content shows, even when the image's structures cannot be read.
    public var format: ImageFormat
    /// nil when the image itself is damaged (`error` says how).
    public var facts: DiskFacts?
    /// The parent as found, when the image has one and it was found.
    public var parentPath: String?
    public var parentIdentityMatches: Bool?
    /// Images in the chain, this one included; nil when the chain could not be followed to its end.
    public var chainDepth: Int?
    /// The first problem of the image or its chain, as VHDFormat words it.
    public var error: String?
    /// The file identity of every parent found, nearest first.
    public var parentFiles: [UInt64] = []

    /// An image whose own structures could not be read.
    public init(format: ImageFormat, damaged error: any Error) {
        self.format = format
        self.error = Self.message(error)
    }

    /// Follows the parents of `top` through `namespace`, as `VirtualDisk.open` does through the host's files,
    /// but never fails: the first problem becomes `error`. A wrong parent identity is a problem, yet the
    /// chain is still followed so its depth is known.
    public init(top: ImageLayerFacts, fileIdentity: UInt64, namespace: any ImageNamespace) {
        format = top.facts.format
        facts = top.facts
        var child = top
        var depth = 1
        var visited: Set<UInt64> = [fileIdentity]
        while let link = child.facts.parent {
            guard depth < VirtualDisk.maximumChainDepth else {
                error = error ?? VHDError.chainTooDeep(path: top.facts.path, limit: VirtualDisk.maximumChainDepth).description
                return
            }
            // Lexical only: resolving symbolic links would go through the file system (for CSVFS, its own mount).
            let candidates = ParentResolver.candidates(for: link, childPath: child.facts.path,
                                                       normalize: ParentResolver.lexicallyNormalized)
            var found: (path: String, facts: ImageLayerFacts, fileIdentity: UInt64)?
            do {
                for candidate in candidates {
                    if let image = try namespace.image(at: candidate) {
                        found = (candidate, image.facts, image.fileIdentity)
                        break
                    }
                }
            } catch {
                self.error = self.error ?? Self.message(error)
                return
            }
            guard let found else {
                error = error ?? VHDError.parentMissing(child: child.facts.path, tried: candidates).description
                return
            }
            let matches = child.accepts(parentIdentity: found.facts.facts.identity)
            if depth == 1 {
                parentPath = found.path
                parentIdentityMatches = matches
            }
            guard visited.insert(found.fileIdentity).inserted else {
                error = error ?? VHDError.parentLoop(path: found.path).description
                return
            }
            parentFiles.append(found.fileIdentity)
            if !matches {
                error = error ?? VHDError.parentMismatch(child: child.facts.path, parent: found.path,
                                                         expected: link.identity, found: found.facts.facts.identity).description
            }
            child = found.facts
            depth += 1
        }
        chainDepth = depth
    }

    private static func message(_ error: any Error) -> String {
        (error as? VHDError)?.description ?? String(describing: error)
    }
}
