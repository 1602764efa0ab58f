import CSVFS
@testable import CSVFSCluster
import Testing

/// The windows of a file's map a node keeps, and how a request is cut out of them.
@Suite struct CachedFileMapTests {
    static let mib: Int64 = 1 << 20

    static func segment(_ logical: Int64, _ length: Int64, _ physical: Int64?, unwritten: Bool = false) -> FileSegment {
        FileSegment(logical: logical, length: length, physical: physical, unwritten: unwritten)
    }

    @Test func aRequestIsCutOutOfTheWindowThatHoldsIt() {
        var map = CachedFileMap(size: 3 * UInt64(Self.mib))
        let window = CachedFileMap.window(around: 4096..<8192)
        #expect(window == 0..<CachedFileMap.window)
        map.add(window, [Self.segment(0, Self.mib, 100 * Self.mib),
                         Self.segment(Self.mib, Self.mib, nil),
                         Self.segment(2 * Self.mib, CachedFileMap.window - 2 * Self.mib, 7 * Self.mib, unwritten: true)])
        #expect(map.segments(in: 4096..<8192) == [Self.segment(4096, 4096, 100 * Self.mib + 4096)])
        #expect(map.segments(in: (Self.mib - 4096)..<(2 * Self.mib + 8192)) == [
            Self.segment(Self.mib - 4096, 4096, 101 * Self.mib - 4096),
            Self.segment(Self.mib, Self.mib, nil),
            Self.segment(2 * Self.mib, 8192, 7 * Self.mib, unwritten: true),
        ])
        #expect(map.segments(in: (CachedFileMap.window - 4096)..<(CachedFileMap.window + 4096)) == nil, "beyond the window")
    }

    @Test func windowsAreAlignedAndAHugeRequestIsItsOwn() {
        let w = CachedFileMap.window
        #expect(CachedFileMap.window(around: (w + 5)..<(w + 10)) == w..<(2 * w))
        #expect(CachedFileMap.window(around: (w - 4096)..<(w + 4096)) == 0..<(2 * w), "a request across two windows")
        #expect(CachedFileMap.window(around: 4096..<Int64.max) == 4096..<Int64.max)
    }

    @Test func theOldestWindowGoesFirst() {
        var map = CachedFileMap(size: 0)
        let w = CachedFileMap.window
        for index in 0...Int64(CachedFileMap.maxWindows) {
            map.add((index * w)..<((index + 1) * w), [Self.segment(index * w, w, nil)])
        }
        #expect(map.segments(in: 0..<4096) == nil)
        #expect(map.segments(in: w..<(w + 4096)) == [Self.segment(w, 4096, nil)])
    }
}
