import Foundation
import Testing
@testable import LockManager
import TestSupport

@Suite struct LocalCoordinationTests {
    /// members() scans the member bytes with range queries; it must find every live member,
    /// wherever its byte is, and drop one as soon as it leaves.
    @Test func membersAreFoundAnywhereInTheRange() async throws {
        let dir = try makeTemporaryDirectory("dlm-members")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lun").path
        let ids: [UInt32] = [1, 2, 3, 77, 128, 200, 255, 256]
        var nodes: [UInt32: LocalCoordination] = [:]
        // Start them out of order, so the kernel's lock list is not sorted by offset.
        for id in ids.reversed() {
            let c = try LocalCoordination(path: file, region: .ownFile, node: id)
            try await c.start(address: "127.0.0.1:\(id)")
            nodes[id] = c
        }
        let observer = try LocalCoordination(path: file, region: .ownFile, node: 9)
        #expect(try await observer.members() == Set(ids + [9]))
        #expect(try await nodes[77]!.members() == Set(ids))
        for gone in [UInt32(77), 1, 256] {
            await nodes[gone]!.stop()
            nodes[gone] = nil
            #expect(try await observer.members() == Set(nodes.keys).union([9]))
        }
        for c in nodes.values { await c.stop() }
        #expect(try await observer.members() == [9])
    }

    /// A region inside a bigger file: election, record and membership happen there, and not one byte
    /// outside it changes (the file may be a LUN with a superblock in front of the region).
    @Test func theBackendKeepsToItsRegion() async throws {
        let dir = try makeTemporaryDirectory("dlm-region")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lun").path
        let size = 256 * 1024
        let pattern = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try Data(pattern).write(to: URL(fileURLWithPath: file))
        let region = LocalCoordination.Region(offset: 64 * 1024, length: 64 * 1024)
        let one = try LocalCoordination(path: file, region: region, node: 1)
        let two = try LocalCoordination(path: file, region: region, node: 2)
        try await one.start(address: "127.0.0.1:1")
        try await two.start(address: "127.0.0.1:2")
        try await eventually("a leader") { one.ownLeadership() != nil || two.ownLeadership() != nil }
        let leader = try #require(one.ownLeadership() ?? two.ownLeadership())
        #expect(try await (leader.node == 1 ? two : one).leader() == leader)
        #expect(try await one.members() == [1, 2])
        await one.stop()
        await two.stop()
        let after = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        let inside = Int(region.offset)..<Int(region.offset + region.length)
        let outsideUnchanged = after.count == size && after[..<inside.lowerBound] == pattern[..<inside.lowerBound]
            && after[inside.upperBound...] == pattern[inside.upperBound...]
        #expect(outsideUnchanged, "bytes outside the region are untouched")
        #expect(after[inside] != pattern[inside], "the leader record went into the region")
    }

    @Test func aRegionTooSmallIsRefused() throws {
        let dir = try makeTemporaryDirectory("dlm-region-small")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lun").path
        #expect(throws: CoordinationError.self) {
            try LocalCoordination(path: file, region: .init(offset: 0, length: LocalCoordination.regionLength - 1), node: 1)
        }
        #expect(throws: CoordinationError.self) { try LocalCoordination(path: file, region: .init(offset: -1, length: 1 << 16), node: 1) }
    }
}
