import Foundation
import TestSupport
import Testing
@testable import VHDFormat

/// Differencing chains made by VHDFormat: libvhdi reads them identical to our flattened view; identity,
/// missing parents and loops are errors; convert against a base and merge keep the data.
@Suite struct ChainTests {
    static let size = 24 << 20

    /// Builds base + `depth` children, each written at its own places, and returns the top and the model.
    static func makeChain(_ format: ImageFormat, depth: Int, in directory: TestDirectory) throws -> (top: String, model: DiskModel) {
        var model = DiskModel(size: size)
        let base = directory.file("base.\(format.rawValue)")
        try DiskCreator.create(at: base, options: .init(format: format, type: .dynamic, virtualSize: UInt64(size)))
        var disk = try VirtualDisk.open(base, options: .init(writable: true))
        try model.write(disk, at: 0, count: 3 << 20, seed: 1)
        try model.write(disk, at: 10 << 20, count: 5000, seed: 2)
        try disk.close()
        var parent = base
        for level in 1...depth {
            let child = directory.file("child\(level).\(format.rawValue)")
            try DiskCreator.create(at: child, options: .init(format: format, type: .differencing, parentPath: parent))
            disk = try VirtualDisk.open(child, options: .init(writable: true))
            // Partly over the parent's data, partly over zeros, unaligned, across block boundaries.
            try model.write(disk, at: level * 700_000, count: 9000 + level, seed: UInt8(10 + level))
            try model.write(disk, at: (2 << 20) - 1000 * level, count: 2000, seed: UInt8(20 + level))
            try model.write(disk, at: (16 << 20) + level * 4096, count: 4096, seed: UInt8(30 + level))
            try disk.close()
            parent = child
        }
        return (parent, model)
    }

    static let chains: [(ImageFormat, Int)] = [(.vhd, 1), (.vhd, 3), (.vhdx, 1), (.vhdx, 3)]

    @Test(arguments: chains)
    func libvhdiReadsOurChains(_ format: ImageFormat, _ depth: Int) throws {
        let directory = try TestDirectory()
        let (top, model) = try Self.makeChain(format, depth: depth, in: directory)
        let disk = try VirtualDisk.open(top)
        #expect(disk.chain.count == depth + 1)
        #expect(disk.chain.dropLast().allSatisfy { $0.type == .differencing && $0.parent != nil })
        let flattened = try disk.read(at: 0, count: Self.size)
        #expect(FileCompare.firstDifference(flattened, model.bytes) == nil)
        try VhdiMount.withMount(top, in: directory.path) { mountPoint in
            let names = try FileManager.default.contentsOfDirectory(atPath: mountPoint)
            #expect(names.count == depth + 1)
            let viaLibvhdi = try FileCompare.contents(try VhdiMount.topView(mountPoint))
            #expect(FileCompare.firstDifference(viaLibvhdi, flattened) == nil)
        }
        #expect(try DiskChecker.check(top).isClean)
        let attributes = Dictionary(uniqueKeysWithValues: disk.facts.extendedAttributes.map { ($0.name, $0.value) })
        #expect(attributes["user.vhd.type"] == "differencing")
        #expect(attributes["user.vhd.parent_identity"] == disk.chain[1].identity)
        #expect(attributes["user.vhd.virtual_size"] == String(Self.size))
    }

    @Test(arguments: [ImageFormat.vhd, .vhdx])
    func convertAgainstAParentHoldsOnlyTheDifference(_ format: ImageFormat) throws {
        let directory = try TestDirectory()
        let base = directory.file("base.\(format.rawValue)")
        try DiskCreator.create(at: base, options: .init(format: format, type: .dynamic, virtualSize: UInt64(Self.size)))
        var model = DiskModel(size: Self.size)
        var disk = try VirtualDisk.open(base, options: .init(writable: true))
        try model.write(disk, at: 0, count: 8 << 20, seed: 3)
        try disk.close()
        // The wanted disk: the base with a small change and a zeroed range where the base has data.
        let wanted = directory.file("wanted.raw")
        var changed = model
        changed.bytes.replaceSubrange(5000..<5100, with: [UInt8](repeating: 0x77, count: 100))
        changed.bytes.replaceSubrange((4 << 20)..<(4 << 20) + 65536, with: [UInt8](repeating: 0, count: 65536))
        #expect(FileManager.default.createFile(atPath: wanted, contents: Data(changed.bytes)))

        let child = directory.file("child.\(format.rawValue)")
        try DiskConverter.convert(from: wanted, to: child, options: .init(sourceFormat: .raw, outputFormat: format, parentPath: base))
        disk = try VirtualDisk.open(child)
        #expect(disk.facts.type == .differencing)
        #expect(FileCompare.firstDifference(try disk.read(at: 0, count: Self.size), changed.bytes) == nil)
        // Only the two changed 64 KiB pieces are held by the child (sector bitmaps in both formats),
        // not the 8 MiB the base already has.
        let held = try disk.allocationMap().filter { $0.depth == 0 }.reduce(0) { $0 + $1.length }
        #expect(held == 2 * 65536)
        try VhdiMount.withMount(child, in: directory.path) { mountPoint in
            let viaLibvhdi = try FileCompare.contents(try VhdiMount.topView(mountPoint))
            #expect(FileCompare.firstDifference(viaLibvhdi, changed.bytes) == nil)
        }
    }

    @Test(arguments: [ImageFormat.vhd, .vhdx])
    func mergeWritesTheChildIntoTheParent(_ format: ImageFormat) throws {
        let directory = try TestDirectory()
        let (top, model) = try Self.makeChain(format, depth: 2, in: directory)
        let parent = try DiskMerger.merge(child: top)
        #expect(parent.hasSuffix("child1.\(format.rawValue)"))
        #expect(FileCompare.firstDifference(try FileCompare.flattened(parent), model.bytes) == nil)
        #expect(try DiskChecker.check(parent).isClean)
    }

    @Test(arguments: [ImageFormat.vhd, .vhdx])
    func parentIdentityIsChecked(_ format: ImageFormat) throws {
        let directory = try TestDirectory()
        let (top, _) = try Self.makeChain(format, depth: 1, in: directory)
        let base = directory.file("base.\(format.rawValue)")
        // Replace the parent by another disk of the same name and size.
        try FileManager.default.removeItem(atPath: base)
        try DiskCreator.create(at: base, options: .init(format: format, type: .dynamic, virtualSize: UInt64(Self.size)))
        #expect {
            try VirtualDisk.open(top)
        } throws: { error in
            guard case .parentMismatch = error as? VHDError else { return false }
            return true
        }
        #expect(try VirtualDisk.open(top, options: .init(allowParentMismatch: true)).chain.count == 2)
        #expect(!(try DiskChecker.check(top).isClean))
    }

    @Test(arguments: [ImageFormat.vhd, .vhdx])
    func missingParentAndLoopsAreErrors(_ format: ImageFormat) throws {
        let directory = try TestDirectory()
        let (top, _) = try Self.makeChain(format, depth: 1, in: directory)
        let base = directory.file("base.\(format.rawValue)")
        try FileManager.default.moveItem(atPath: base, toPath: base + ".moved")
        #expect {
            try VirtualDisk.open(top)
        } throws: { error in
            guard case let .parentMissing(_, tried) = error as? VHDError else { return false }
            return tried.contains(base)
        }
        // A child put in its parent's place names itself as its parent.
        try FileManager.default.moveItem(atPath: top, toPath: base)
        #expect(throws: VHDError.parentLoop(path: base)) { try VirtualDisk.open(base) }
    }

    @Test func differencingVhdxKeepsSectorBitmapsForLibvhdi() throws {
        let directory = try TestDirectory()
        let (top, _) = try Self.makeChain(.vhdx, depth: 1, in: directory)
        let layer = try VHDXLayer(file: ImageFile(path: top, writable: false))
        let bitmapEntry = layer.bat[layer.chunkRatio]
        #expect(bitmapEntry & 7 == 6)
    }
}
