@testable import CSVFS
import Foundation
import Glibc
import Testing

/// RemoteMetadataService -> loopback channel -> MetadataServer -> the local service of a real volume, in-process.
@Suite(.serialized)
final class RemoteMetadataServiceTests {
    let directory: URL
    var lun: String { directory.appendingPathComponent("lun.img").path }
    let root = Caller(uid: 0, gid: 0)
    let regular = UInt32(S_IFREG) | 0o644

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("csvfs-rpc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try VolumeFormatter.format(path: lun, size: 64 << 20, force: false)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func withVolume(_ body: (Volume) throws -> Void) throws {
        let volume = try Volume.open(path: lun)
        defer { volume.close() }
        try body(volume)
    }

    /// The volume's own service, reached through the codec and a server in this process.
    func loopback(_ volume: Volume) -> RemoteMetadataService {
        RemoteMetadataService(channel: LoopbackMetadataChannel(server: MetadataServer(service: volume.service)), node: 1)
    }

    @Test func callsThroughTheRPCReachTheLocalStoreAndAnswerAsIt() throws {
        try withVolume { volume in
            let remote = loopback(volume)
            let file = try remote.createNode(parent: 1, name: Array("f".utf8), mode: regular, rdev: 0, symlinkTarget: nil, caller: root)
            #expect(try volume.service.lookup(parent: 1, name: Array("f".utf8)) == file, "the create reached the store")
            #expect(try remote.lookup(parent: 1, name: Array("f".utf8)) == file)
            #expect(throws: Errno.noEntry) { try remote.lookup(parent: 1, name: Array("missing".utf8)) }
            #expect(throws: Errno.exists) {
                try remote.createNode(parent: 1, name: Array("f".utf8), mode: regular, rdev: 0, symlinkTarget: nil, caller: root)
            }

            let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            // The data path of a node that is not the coordinator: its map changes go through the RPC.
            let path = try DataPath(service: remote, device: volume.device, io: .threads)
            defer { path.close() }
            try data.withUnsafeBytes { try path.write(file.ino, offset: 0, data: $0) }
            #expect(try path.read(file.ino, offset: 0, count: 20_000) { Array($0) } == data)
            #expect(try remote.attributes(file.ino).size == 10_000)
            #expect(try remote.mapping(file.ino, 0..<4096) == (try volume.service.mapping(file.ino, 0..<4096)))

            try remote.setXattr(file.ino, name: Array("user.a".utf8), value: [1, 2, 3], create: true, replace: false)
            #expect(try remote.getXattr(file.ino, name: Array("user.a".utf8)) == [1, 2, 3])
            #expect(try remote.listXattrs(file.ino) == [Array("user.a".utf8)])
            try remote.removeXattr(file.ino, name: Array("user.a".utf8))
            #expect(throws: Errno.noData) { try remote.getXattr(file.ino, name: Array("user.a".utf8)) }

            let listing = try remote.readdir(1, after: 0, limit: 100, plus: true)
            #expect(listing == (try volume.service.readdir(1, after: 0, limit: 100, plus: true)))
            #expect(listing.map { String(decoding: $0.name, as: UTF8.self) } == [".", "..", "f"])
            #expect(try remote.statistics() == (try volume.service.statistics()))
            let handle = try remote.opened(file.ino)
            try remote.released(file.ino, handle: handle)
            try remote.sync(reportingTo: nil)

            let counts = remote.counters
            #expect(counts[.createNode] == 2)
            #expect(counts[.lookup] == 2)
            #expect(counts[.readdir] == 1)
            #expect(counts[.prepareWrite] == 1)
            #expect(counts[.completeWrite] == 1)
            #expect(counts.failures == 0, "errno answers are replies, not failures")
            #expect(counts.total == MetadataCallKind.allCases.reduce(0) { $0 + counts[$1] })
            #expect(counts.bytesSent > 0 && counts.bytesReceived > counts.bytesSent)
            #expect(counts.since(counts).total == 0)
        }
    }

    @Test func requestIDsCarryTheNodeAndASequenceThatGrowsByOneFromARandomStart() throws {
        try withVolume { volume in
            let recorder = RecordingChannel(inner: LoopbackMetadataChannel(server: MetadataServer(service: volume.service)))
            let remote = RemoteMetadataService(channel: recorder, node: 42)
            _ = try remote.attributes(1)
            _ = try? remote.lookup(parent: 1, name: Array("none".utf8))
            try remote.commit()
            let first = try #require(recorder.ids.first).sequence
            #expect(recorder.ids == (0..<3).map { MetadataRequestID(node: 42, sequence: first + UInt64($0)) })
            // Another incarnation of the node starts elsewhere, so a coordinator that remembers answers does
            // not take its requests for resends of the first one's.
            let restarted = RecordingChannel(inner: LoopbackMetadataChannel(server: MetadataServer(service: volume.service)))
            _ = try RemoteMetadataService(channel: restarted, node: 42).attributes(1)
            #expect(restarted.ids.first?.sequence != first)
        }
    }

    @Test func aCallPastItsDeadlineTimesOutAndIsNotServed() throws {
        try withVolume { volume in
            let remote = RemoteMetadataService(channel: LoopbackMetadataChannel(server: MetadataServer(service: volume.service)),
                                               node: 2, patience: CallPatience(timeout: .zero, fence: nil))
            #expect(throws: Errno.timedOut) {
                try remote.createNode(parent: 1, name: Array("late".utf8), mode: self.regular, rdev: 0, symlinkTarget: nil, caller: self.root)
            }
            #expect(throws: Errno.noEntry) { try volume.service.lookup(parent: 1, name: Array("late".utf8)) }
            #expect(remote.counters.failures == 1)
        }
    }

    @Test func aMalformedRequestIsRefusedWithoutReachingTheService() throws {
        try withVolume { volume in
            let server = MetadataServer(service: volume.service)
            let id = MetadataRequestID(node: 3, sequence: 1)
            let request = MetadataWire.encodeRequest(id: id, .createNode(parent: 1, name: Array("cut".utf8), mode: regular, rdev: 0,
                                                                         symlinkTarget: nil, caller: root))
            let refusal = server.serve(Array(request.dropLast()))
            #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(refusal, id: id, kind: .createNode) }
            #expect(server.refusedCount == 1)
            #expect(throws: Errno.noEntry) { try volume.service.lookup(parent: 1, name: Array("cut".utf8)) }
            // Garbage that has no envelope at all is refused too.
            #expect(throws: Errno.protocolError) {
                try MetadataWire.decodeReply(server.serve([0xFF]), id: MetadataRequestID(node: 0, sequence: 0), kind: .createNode)
            }
            #expect(server.refusedCount == 2)
        }
    }

    @Test func aDamagedReplyIsEPROTOForTheCaller() throws {
        try withVolume { volume in
            let damaging = TruncatingChannel(inner: LoopbackMetadataChannel(server: MetadataServer(service: volume.service)))
            let remote = RemoteMetadataService(channel: damaging, node: 2)
            #expect(throws: Errno.protocolError) { try remote.attributes(1) }
            #expect(remote.counters.failures == 1)
        }
    }

    /// A coordinator lost with a call in flight: the server ran it, the answer never came. The call is sent
    /// again under the same id: a read or a lock runs again; a create, rename, link or unlink is found
    /// recorded with its change and answered as the first attempt was, not run twice.
    @Test func aCallLostWithItsConnectionIsSentAgainAndTakesEffectOnce() throws {
        try withVolume { volume in
            let server = MetadataServer(service: volume.service, applied: volume.service)
            let losing = AnswerLosingChannel(inner: LoopbackMetadataChannel(server: server))
            let remote = RemoteMetadataService(channel: losing, node: 2)
            let file = try remote.createNode(parent: 1, name: Array("f".utf8), mode: regular, rdev: 0, symlinkTarget: nil, caller: root)

            losing.loseNext(1)
            #expect(try remote.lookup(parent: 1, name: Array("f".utf8)) == file, "a read is asked again")
            let lock = FileLock(ino: file.ino, kind: .record, mode: .exclusive, range: FileLockRange(first: 0, last: 9),
                                owner: FileLockOwner(node: 2, owner: 5), handle: 1, pid: 1)
            losing.loseNext(2)
            #expect(try remote.setLock(lock, wait: nil), "a lock is asked again, and setting it twice is one lock")
            #expect(try volume.service.fileLocks().count == 1)

            losing.loseNext(1)
            let created = try remote.createNode(parent: 1, name: Array("g".utf8), mode: regular, rdev: 0, symlinkTarget: nil, caller: root)
            #expect(created == (try volume.service.lookup(parent: 1, name: Array("g".utf8))), "answered as it was made, not EEXIST")
            losing.loseNext(1)
            try remote.rename(parent: 1, name: Array("g".utf8), newParent: 1, newName: Array("h".utf8), mode: .replace)
            #expect(try volume.service.lookup(parent: 1, name: Array("h".utf8)).ino == created.ino)
            losing.loseNext(1)
            let linked = try remote.link(created.ino, newParent: 1, newName: Array("i".utf8))
            #expect(linked.ino == created.ino && linked.nlink == 2, "\(linked)")
            losing.loseNext(1)
            try remote.unlink(parent: 1, name: Array("h".utf8))
            #expect(throws: Errno.noEntry) { try volume.service.lookup(parent: 1, name: Array("h".utf8)) }
            #expect(try volume.service.lookup(parent: 1, name: Array("i".utf8)).nlink == 1, "unlinked once")
            #expect(losing.served == 6 + 4 * 2, "a create, a read twice, a lock three times, then four calls twice each")

            // Without the record the same loss would answer the second attempt's EEXIST.
            let unrecorded = AnswerLosingChannel(inner: LoopbackMetadataChannel(server: MetadataServer(service: volume.service)))
            let forgetful = RemoteMetadataService(channel: unrecorded, node: 3)
            unrecorded.loseNext(1)
            #expect(throws: Errno.exists) {
                try forgetful.createNode(parent: 1, name: Array("j".utf8), mode: regular, rdev: 0, symlinkTarget: nil, caller: root)
            }
        }
    }

    /// Not a timed assert: prints what a loopback RPC adds to a call, beside the direct call, in the same run.
    @Test func perCallOverheadOfTheLoopbackRPC() throws {
        try withVolume { volume in
            let remote = loopback(volume)
            let local = volume.service
            let directory = try local.createNode(parent: 1, name: Array("d".utf8), mode: UInt32(S_IFDIR) | 0o755, rdev: 0,
                                                 symlinkTarget: nil, caller: root)
            for index in 0..<1000 {
                _ = try local.createNode(parent: directory.ino, name: Array("file-\(index)".utf8), mode: regular, rdev: 0,
                                         symlinkTarget: nil, caller: root)
            }
            try local.commit()

            func measure(_ label: String, iterations: Int, _ body: (any MetadataService) throws -> Void) throws {
                var timings: [String] = []
                for (name, service) in [("direct", local as any MetadataService), ("rpc", remote as any MetadataService)] {
                    for _ in 0..<(iterations / 10) { try body(service) }  // warm-up
                    let before = remote.counters
                    let start = ContinuousClock.now
                    for _ in 0..<iterations { try body(service) }
                    let elapsed = ContinuousClock.now - start
                    let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
                    let sent = remote.counters.since(before)
                    let bytes = sent.total > 0 ? " (\((sent.bytesSent + sent.bytesReceived) / sent.total) bytes/call)" : ""
                    timings.append("\(name) \(Int(nanoseconds / Double(iterations))) ns/call\(bytes)")
                }
                print("metadata RPC overhead, \(label): \(timings.joined(separator: ", "))")
            }
            try measure("getattr", iterations: 50_000) { _ = try $0.attributes(directory.ino) }
            try measure("lookup", iterations: 50_000) { _ = try $0.lookup(parent: directory.ino, name: Array("file-500".utf8)) }
            try measure("readdirplus of 1000 entries", iterations: 200) { service in
                let entries = try service.readdir(directory.ino, after: 0, limit: 2000, plus: true)
                guard entries.count == 1002 else { throw Errno.io }
            }
            #expect(try remote.readdir(directory.ino, after: 0, limit: 2000, plus: true)
                    == (try local.readdir(directory.ino, after: 0, limit: 2000, plus: true)))
        }
    }
}

/// Passes requests on and notes each one's id, decoded from the bytes as the server sees them.
final class RecordingChannel: MetadataChannel {
    let inner: LoopbackMetadataChannel
    private let recorded = Locked<[MetadataRequestID]>([])

    init(inner: LoopbackMetadataChannel) { self.inner = inner }

    var ids: [MetadataRequestID] { recorded.withLock { $0 } }

    func exchange(_ request: [UInt8], deadline: ContinuousClock.Instant) throws(Errno) -> [UInt8] {
        let id = try MetadataWire.decodeRequest(request).id
        recorded.withLock { $0.append(id) }
        return try inner.exchange(request, deadline: deadline)
    }
}

/// Serves every request, but loses the answers of the next few, as a coordinator that dies after its commit.
final class AnswerLosingChannel: MetadataChannel {
    let inner: LoopbackMetadataChannel
    private let state = Locked((toLose: 0, served: 0))

    init(inner: LoopbackMetadataChannel) { self.inner = inner }

    func loseNext(_ count: Int) { state.withLock { $0.toLose = count } }
    var served: Int { state.withLock { $0.served } }

    func exchange(_ request: [UInt8], deadline: ContinuousClock.Instant) throws(Errno) -> [UInt8] {
        let reply = try inner.exchange(request, deadline: deadline)
        let lose = state.withLock { state -> Bool in
            state.served += 1
            guard state.toLose > 0 else { return false }
            state.toLose -= 1
            return true
        }
        if lose { throw .connectionLost }
        return reply
    }
}

/// Loses the last byte of every reply, as a faulty link would.
struct TruncatingChannel: MetadataChannel {
    let inner: LoopbackMetadataChannel

    func exchange(_ request: [UInt8], deadline: ContinuousClock.Instant) throws(Errno) -> [UInt8] {
        Array(try inner.exchange(request, deadline: deadline).dropLast())
    }
}
