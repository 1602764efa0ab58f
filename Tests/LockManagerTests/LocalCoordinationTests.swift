import Foundation
import Testing
@testable import LockManager

@Suite struct LocalCoordinationTests {
    /// members() scans the member bytes with range queries; it must find every live member,
    /// wherever its byte is, and drop one as soon as it leaves.
    @Test func membersAreFoundAnywhereInTheRange() async throws {
        let dir = try ProcessSupport.tempDirectory("dlm-members")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("lun").path
        let ids: [UInt32] = [1, 2, 3, 77, 128, 200, 255, 256]
        var nodes: [UInt32: LocalCoordination] = [:]
        // Start them out of order, so the kernel's lock list is not sorted by offset.
        for id in ids.reversed() {
            let c = try LocalCoordination(path: file, node: id)
            try await c.start(address: "127.0.0.1:\(id)")
            nodes[id] = c
        }
        let observer = try LocalCoordination(path: file, node: 9)
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
}
