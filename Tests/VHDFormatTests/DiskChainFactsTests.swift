import Foundation
import Testing
@testable import VHDFormat

/// Chains followed through an `ImageNamespace` over images held in memory, at paths that exist on no
/// host: everything must come through `ImageStorage` and the namespace, as CSVFS needs.
@Suite struct DiskChainFactsTests {
    /// An image's bytes in memory.
    final class MemoryStorage: ImageStorage {
        let bytes: [UInt8]
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        func size() throws -> UInt64 { UInt64(bytes.count) }
        func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            guard offset < UInt64(bytes.count) else { return 0 }
            let count = min(buffer.count, bytes.count - Int(offset))
            bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + count)])) }
            return count
        }
    }

    /// Files by path; the file identity is the index, so the same file under two paths is recognised.
    struct MemoryNamespace: ImageNamespace {
        var files: [String: (bytes: [UInt8], identity: UInt64)] = [:]
        var failing: Set<String> = []

        func image(at path: String) throws -> (facts: ImageLayerFacts, fileIdentity: UInt64)? {
            #expect(path == ParentResolver.lexicallyNormalized(path), "the namespace gets normalised paths: \(path)")
            if failing.contains(path) { throw VHDError.io(path: path, operation: "look up", errno: EIO) }
            guard let file = files[path] else { return nil }
            return (try Self.facts(file.bytes, path: path), file.identity)
        }

        static func facts(_ bytes: [UInt8], path: String) throws -> ImageLayerFacts {
            let storage = MemoryStorage(bytes)
            let format = try #require(try ImageLayerFacts.detectFormat(storage, path: path))
            return try ImageLayerFacts(storage: storage, path: path, format: format)
        }
    }

    /// base <- sub/child <- sub/grandchild, made on the host, then known only under /nonexistent-volume.
    static func chain(_ format: ImageFormat) throws -> (namespace: MemoryNamespace, host: [DiskFacts]) {
        let directory = try TestDirectory("chain-\(format)")
        try FileManager.default.createDirectory(atPath: directory.file("sub"), withIntermediateDirectories: false)
        try DiskCreator.create(at: directory.file("base"), options: .init(format: format, type: .dynamic, virtualSize: 8 << 20))
        try DiskCreator.create(at: directory.file("sub/child"), options: .init(format: format, type: .differencing,
                                                                               parentPath: directory.file("base")))
        try DiskCreator.create(at: directory.file("sub/grandchild"), options: .init(format: format, type: .differencing,
                                                                                    parentPath: directory.file("sub/child")))
        var namespace = MemoryNamespace()
        for (index, name) in ["base", "sub/child", "sub/grandchild"].enumerated() {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: directory.file(name))))
            namespace.files["/nonexistent-volume/" + name] = (bytes, UInt64(index + 1))
        }
        return (namespace, try VirtualDisk.open(directory.file("sub/grandchild")).chain)
    }

    @Test(arguments: [ImageFormat.vhd, .vhdx]) func followsTheChainLikeVirtualDisk(_ format: ImageFormat) throws {
        let (namespace, host) = try Self.chain(format)
        let path = "/nonexistent-volume/sub/grandchild"
        let top = try MemoryNamespace.facts(namespace.files[path]!.bytes, path: path)
        let chain = DiskChainFacts(top: top, fileIdentity: 3, namespace: namespace)
        #expect(chain.error == nil && chain.chainDepth == 3)
        #expect(chain.parentPath == "/nonexistent-volume/sub/child" && chain.parentIdentityMatches == true)
        #expect(chain.facts?.identity == host[0].identity && chain.facts?.parent?.identity == host[1].identity)
        let attributes = Dictionary(uniqueKeysWithValues: chain.extendedAttributes.map { ($0.name, $0.value) })
        #expect(attributes["user.vhd.chain_depth"] == "3" && attributes["user.vhd.parent_identity_ok"] == "yes")
        #expect(attributes["user.vhd.parent"] == "/nonexistent-volume/sub/child" && attributes["user.vhd.error"] == nil)
        #expect(attributes["user.vhd.virtual_size"] == String(8 << 20) && attributes["user.vhd.type"] == "differencing")
    }

    @Test(arguments: [ImageFormat.vhd, .vhdx]) func brokenChainsBecomeAnError(_ format: ImageFormat) throws {
        let (complete, _) = try Self.chain(format)
        let path = "/nonexistent-volume/sub/grandchild"
        let top = try MemoryNamespace.facts(complete.files[path]!.bytes, path: path)

        // The base gone: the grandchild finds its parent, the chain ends one further down.
        var missing = complete
        missing.files["/nonexistent-volume/base"] = nil
        let orphan = DiskChainFacts(top: top, fileIdentity: 3, namespace: missing)
        #expect(orphan.parentPath == "/nonexistent-volume/sub/child" && orphan.parentIdentityMatches == true)
        #expect(orphan.chainDepth == nil)
        #expect(orphan.error?.contains("parent not found") == true && orphan.error?.contains("/nonexistent-volume/base") == true)
        #expect(orphan.extendedAttributes.contains { $0.name == "user.vhd.error" })

        // The child's place taken by the base (another identity): found, wrong, and still followed to its end.
        var impostor = complete
        impostor.files["/nonexistent-volume/sub/child"] = complete.files["/nonexistent-volume/base"]
        impostor.files["/nonexistent-volume/base"] = nil
        let wrong = DiskChainFacts(top: top, fileIdentity: 3, namespace: impostor)
        #expect(wrong.parentIdentityMatches == false && wrong.chainDepth == 2)
        #expect(wrong.error?.contains("expects") == true)

        // The parent is the image itself (the same file under another name): a loop, not an endless walk.
        var loop = complete
        loop.files["/nonexistent-volume/sub/child"] = (complete.files[path]!.bytes, 3)
        let looped = DiskChainFacts(top: top, fileIdentity: 3, namespace: loop)
        #expect(looped.error?.contains("loops") == true && looped.chainDepth == nil)

        // A namespace that cannot answer: its error, not a crash and not "missing".
        var failing = complete
        failing.failing = ["/nonexistent-volume/sub/child"]
        #expect(DiskChainFacts(top: top, fileIdentity: 3, namespace: failing).error?.contains("look up failed") == true)
    }

    @Test func damagedImagesKeepTheirFormat() {
        let chain = DiskChainFacts(format: .vhdx, damaged: VHDError.corrupt(path: "/v/d.vhdx", problem: "no valid VHDX header"))
        #expect(chain.extendedAttributes.map(\.name) == ["user.vhd.format", "user.vhd.error"])
        #expect(chain.extendedAttributes.last?.value == "/v/d.vhdx: corrupt: no valid VHDX header")
    }

    @Test func lexicalNormalisationAsksNothingOfTheFileSystem() {
        #expect(ParentResolver.lexicallyNormalized("/a/b/../c") == "/a/c")
        #expect(ParentResolver.lexicallyNormalized("/a/./b//c/") == "/a/b/c")
        #expect(ParentResolver.lexicallyNormalized("/../x") == "/x")
        #expect(ParentResolver.lexicallyNormalized("../a/../../b") == "../../b")
        // /proc/self is a symbolic link: resolving it would change the path.
        #expect(ParentResolver.lexicallyNormalized("/proc/self/../x") == "/proc/x")
    }
}
