@testable import CSVFS
import Testing

@Suite struct OpenFilesTests {
    @Test func handlesAreUniqueAndTheLastCloseIsTold() {
        var files = OpenFiles()
        let first = files.open(7), second = files.open(7), other = files.open(8)
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
        let a1 = files.open(1), a2 = files.open(1), b = files.open(2), c = files.open(3)
        files.flushFailed(covering: [1, 2], .io)
        let told = [files.takeFlushError(handle: a1), files.takeFlushError(handle: a1),
                    files.takeFlushError(handle: a2), files.takeFlushError(handle: c)]
        #expect(told == [.io, nil, .io, nil], "once for each open file of a covered inode, never for others")
        _ = files.close(2, handle: b)
        let reopened = files.open(2)
        let afterClose = [files.takeFlushError(handle: b), files.takeFlushError(handle: reopened)]
        #expect(afterClose == [nil, nil], "a closed file's error goes with it")
    }
}
