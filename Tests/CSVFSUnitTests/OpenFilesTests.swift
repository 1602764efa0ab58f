@testable import CSVFS
import Testing

@Suite struct OpenFilesTests {
    @Test func handlesAreUniqueAndTheLastCloseIsTold() {
        var files = OpenFiles()
        let first = files.open(7, node: 1), second = files.open(7, node: 1), other = files.open(8, node: 2)
        #expect(Set([first, second, other]).count == 3)
        #expect(files.isOpen(7) && files.isOpen(8) && !files.isOpen(9))
        let firstWasLast = files.close(7, handle: first)
        #expect(!firstWasLast)
        let secondWasLast = files.close(7, handle: second)
        #expect(secondWasLast, "the inode's last close")
        #expect(!files.isOpen(7) && files.isOpen(8))
    }

    @Test func aFailedFlushIsToldOnceToEachFileOpenOnWhatItCovered() {
        var files = OpenFiles()
        let a1 = files.open(1, node: 1), a2 = files.open(1, node: 1), b = files.open(2, node: 1), c = files.open(3, node: 1)
        files.flushFailed(covering: [1, 2], .io)
        let told = [files.takeFlushError(handle: a1), files.takeFlushError(handle: a1),
                    files.takeFlushError(handle: a2), files.takeFlushError(handle: c)]
        #expect(told == [.io, nil, .io, nil], "once for each open file of a covered inode, never for others")
        _ = files.close(2, handle: b)
        let reopened = files.open(2, node: 1)
        let afterClose = [files.takeFlushError(handle: b), files.takeFlushError(handle: reopened)]
        #expect(afterClose == [nil, nil], "a closed file's error goes with it")
    }

    @Test func openFilesAreCountedPerNode() {
        var files = OpenFiles()
        let a = files.open(7, node: 2)
        _ = files.open(7, node: 2)
        _ = files.open(7, node: 1)
        _ = files.open(9, node: 2)
        #expect(files.perNode.map { "\($0.node):\($0.ino)x\($0.handles)" } == ["1:7x1", "2:7x2", "2:9x1"])
        _ = files.close(7, handle: a)
        #expect(files.perNode.map { "\($0.node):\($0.ino)x\($0.handles)" } == ["1:7x1", "2:7x1", "2:9x1"])
    }
}
