@testable import CSVFS
import Glibc
import Testing
import TestSupport

/// The metadata RPC's codec: every call and result round-trips, and malformed bytes are an error, never a trap.
struct MetadataWireTests {
    // MARK: round trips

    @Test func everyCallRoundTrips() throws {
        var random = SeededRandom(seed: SeededRandom.seed(from: "CSVFS_WIRE_SEED", test: "everyCallRoundTrips"))
        for kind in MetadataCallKind.allCases {
            for _ in 0..<200 {
                let call = WireSamples.call(kind, &random)
                #expect(call.kind == kind)
                let id = MetadataRequestID(node: random.next(), sequence: random.next())
                let decoded = try MetadataWire.decodeRequest(MetadataWire.encodeRequest(id: id, call))
                #expect(decoded.id == id)
                #expect(decoded.call == call)
            }
        }
    }

    @Test func everyResultAndErrorRoundTrips() throws {
        var random = SeededRandom(seed: SeededRandom.seed(from: "CSVFS_WIRE_SEED", test: "everyResultAndErrorRoundTrips"))
        for kind in MetadataCallKind.allCases {
            for _ in 0..<200 {
                let id = MetadataRequestID(node: random.next(), sequence: random.next())
                let result = WireSamples.result(kind, &random)
                let reply = MetadataWire.encodeReply(id: id, kind: kind, .success(result))
                #expect(try MetadataWire.decodeReply(reply, id: id, kind: kind) == result)

                let error = Errno(Int32.random(in: 1...133, using: &random))
                let failed = MetadataWire.encodeReply(id: id, kind: kind, .failure(error))
                #expect(throws: error) { try MetadataWire.decodeReply(failed, id: id, kind: kind) }
            }
        }
    }

    /// Directory listings have no 16-bit length anywhere: ten thousand entries with attributes, over a MiB.
    @Test func largeReaddirplusReplyFits() throws {
        var random = SeededRandom(seed: 7)
        let entries = (0..<10_000).map { index in
            DirectoryEntry(name: Array("entry-\(index)-".utf8) + WireSamples.bytes(&random, upTo: 200), ino: UInt64(index + 2),
                           mode: 0o100644, nextCookie: Int64(index + 3), attributes: WireSamples.attributes(&random))
        }
        let id = MetadataRequestID(node: 3, sequence: 99)
        let reply = MetadataWire.encodeReply(id: id, kind: .readdir, .success(.entries(entries)))
        #expect(reply.count > 1 << 20)
        #expect(try MetadataWire.decodeReply(reply, id: id, kind: .readdir) == .entries(entries))
    }

    // MARK: malformed input

    @Test func everyTruncatedRequestAndReplyIsAnError() throws {
        var random = SeededRandom(seed: SeededRandom.seed(from: "CSVFS_WIRE_SEED", test: "everyTruncatedRequestAndReplyIsAnError"))
        for kind in MetadataCallKind.allCases {
            let id = MetadataRequestID(node: 5, sequence: UInt64(kind.rawValue))
            let request = MetadataWire.encodeRequest(id: id, WireSamples.call(kind, &random))
            let reply = MetadataWire.encodeReply(id: id, kind: kind, .success(WireSamples.result(kind, &random)))
            for length in 0..<request.count {
                #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(Array(request[..<length])) }
            }
            for length in 0..<reply.count {
                #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(Array(reply[..<length]), id: id, kind: kind) }
            }
            #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(request + [0]) }
            #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(reply + [0], id: id, kind: kind) }
        }
    }

    @Test func lengthsAndCountsLargerThanTheMessageAreErrors() throws {
        let id = MetadataRequestID(node: 1, sequence: 1)
        var lookup = MetadataWire.encodeRequest(id: id, .lookup(parent: 1, name: Array("name".utf8)))
        lookup.replaceSubrange(24..<28, with: [0xFF, 0xFF, 0xFF, 0xFF])  // after the envelope and the parent
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(lookup) }
        lookup.replaceSubrange(24..<28, with: [5, 0, 0, 0])  // one byte more than there is
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(lookup) }

        // A count of entries claiming four billion: refused before anything is reserved for them.
        var listing = MetadataWire.encodeReply(id: id, kind: .readdir, .success(.entries([])))
        listing.replaceSubrange(20..<24, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(listing, id: id, kind: .readdir) }
        var names = MetadataWire.encodeReply(id: id, kind: .listXattrs, .success(.names([[1, 2, 3]])))
        names.replaceSubrange(20..<24, with: [2, 0, 0, 0])
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(names, id: id, kind: .listXattrs) }
    }

    @Test func unknownVersionTypeKindAndFieldValuesAreErrors() throws {
        let id = MetadataRequestID(node: 1, sequence: 1)
        let request = MetadataWire.encodeRequest(id: id, .attributes(ino: 1))
        func patched(_ message: [UInt8], _ offset: Int, _ bytes: [UInt8]) -> [UInt8] {
            var copy = message
            copy.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            return copy
        }
        for unknown: UInt16 in [0, UInt16(MetadataCallKind.allCases.count + 1), 0xFFFF] {
            #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(request, 2, [UInt8(unknown & 0xFF), UInt8(unknown >> 8)])) }
        }
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(request, 0, [2])) }  // version
        for type: UInt8 in [0, 2, 3, 4] {
            #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(request, 1, [type])) }
        }

        // Field values out of their domain: a bool of 2, a rename mode of 3, a range whose end precedes its start,
        // change bits nobody defined, a negative segment, a size beyond off_t.
        let readdir = MetadataWire.encodeRequest(id: id, .readdir(ino: 1, cookie: 0, limit: 10, plus: false))
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(readdir, readdir.count - 1, [2])) }
        let rename = MetadataWire.encodeRequest(id: id, .rename(parent: 1, name: [97], newParent: 1, newName: [98], mode: .replace))
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(rename, rename.count - 1, [3])) }
        let mapping = MetadataWire.encodeRequest(id: id, .mapping(ino: 2, range: 4096..<8192))
        #expect(throws: Errno.protocolError) {
            try MetadataWire.decodeRequest(patched(mapping, 24, withUnsafeBytes(of: Int64(9000).littleEndian, Array.init)))
        }
        let setattr = MetadataWire.encodeRequest(id: id, .setAttributes(ino: 2, changes: AttributeChanges(mode: 0o644)))
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(setattr, 24, [1 | 64])) }
        let segment = FileSegment(logical: 0, length: 4096, physical: 1 << 20, unwritten: false)
        let prepared = MetadataWire.encodeReply(id: id, kind: .prepareWrite, .success(.segments([segment])))
        #expect(throws: Errno.protocolError) {
            try MetadataWire.decodeReply(patched(prepared, 24, withUnsafeBytes(of: Int64(-1).littleEndian, Array.init)),
                                         id: id, kind: .prepareWrite)
        }
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(patched(prepared, 40, [4]), id: id, kind: .prepareWrite) }
        // A file lock of no known kind or mode, or whose last byte precedes its first.
        let lock = FileLock(ino: 2, kind: .record, mode: .shared, range: FileLockRange(first: 10, last: 20),
                            owner: FileLockOwner(node: 1, owner: 5), handle: 3, pid: 9)
        let setLock = MetadataWire.encodeRequest(id: id, .setLock(lock, wait: nil))
        #expect(try MetadataWire.decodeRequest(setLock).call == .setLock(lock, wait: nil))
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(setLock, 24, [3])) }
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeRequest(patched(setLock, 25, [0])) }
        #expect(throws: Errno.protocolError) {
            try MetadataWire.decodeRequest(patched(setLock, 34, withUnsafeBytes(of: Int64(9).littleEndian, Array.init)))
        }
        var sample = SeededRandom(seed: 1)
        var huge = WireSamples.attributes(&sample)
        huge.size = UInt64(Int64.max) + 1
        let stat = MetadataWire.encodeReply(id: id, kind: .attributes, .success(.attributes(huge)))
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(stat, id: id, kind: .attributes) }
    }

    @Test func aReplyToAnotherRequestOrCallIsAnError() throws {
        let id = MetadataRequestID(node: 4, sequence: 10)
        let reply = MetadataWire.encodeReply(id: id, kind: .opened, .success(.handle(77)))
        #expect(try MetadataWire.decodeReply(reply, id: id, kind: .opened) == .handle(77))
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(reply, id: MetadataRequestID(node: 4, sequence: 11), kind: .opened) }
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(reply, id: MetadataRequestID(node: 5, sequence: 10), kind: .opened) }
        #expect(throws: Errno.protocolError) { try MetadataWire.decodeReply(reply, id: id, kind: .attributes) }
        // A request sent back as if it were the reply.
        #expect(throws: Errno.protocolError) {
            try MetadataWire.decodeReply(MetadataWire.encodeRequest(id: id, .opened(ino: 2)), id: id, kind: .opened)
        }
    }

    /// Random corruption of valid messages: each decodes to something or throws, and the process lives.
    @Test func randomlyCorruptedMessagesNeverTrap() {
        var random = SeededRandom(seed: SeededRandom.seed(from: "CSVFS_WIRE_SEED", test: "randomlyCorruptedMessagesNeverTrap"))
        var refused = 0
        for round in 0..<20_000 {
            let kind = MetadataCallKind.allCases[round % MetadataCallKind.allCases.count]
            let id = MetadataRequestID(node: 1, sequence: UInt64(round))
            var request = MetadataWire.encodeRequest(id: id, WireSamples.call(kind, &random))
            var reply = MetadataWire.encodeReply(id: id, kind: kind, .success(WireSamples.result(kind, &random)))
            for _ in 0...Int.random(in: 0..<4, using: &random) {
                request[Int.random(in: 0..<request.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                reply[Int.random(in: 0..<reply.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            if (try? MetadataWire.decodeRequest(request)) == nil { refused += 1 }
            _ = try? MetadataWire.decodeReply(reply, id: id, kind: kind)
        }
        #expect(refused > 0, "some corruptions must be caught")
    }
}

/// Random values of every call and result, for the round trips.
enum WireSamples {
    static func bytes(_ random: inout SeededRandom, upTo limit: Int = 300) -> [UInt8] {
        (0..<Int.random(in: 0...limit, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    static func offset(_ random: inout SeededRandom) -> Int64 { Int64.random(in: 0...(1 << 50), using: &random) }

    static func range(_ random: inout SeededRandom) -> Range<Int64> {
        let start = offset(&random)
        return start..<(start + Int64.random(in: 0...(1 << 30), using: &random))
    }

    static func attributes(_ random: inout SeededRandom) -> InodeAttributes {
        InodeAttributes(ino: random.next(), mode: random.next(), nlink: random.next(), uid: random.next(), gid: random.next(),
                        size: UInt64(offset(&random)), allocated: UInt64(offset(&random)), rdev: random.next(),
                        atime: Int64(bitPattern: random.next()), mtime: Int64(bitPattern: random.next()),
                        ctime: Int64(bitPattern: random.next()))
    }

    static func time(_ random: inout SeededRandom) -> AttributeChanges.Time? {
        switch random.next() % 3 {
        case 0: nil
        case 1: .now
        default: .at(Int64(bitPattern: random.next()))
        }
    }

    static func changes(_ random: inout SeededRandom) -> AttributeChanges {
        AttributeChanges(mode: Bool.random(using: &random) ? random.next() : nil,
                         uid: Bool.random(using: &random) ? random.next() : nil,
                         gid: Bool.random(using: &random) ? random.next() : nil,
                         size: Bool.random(using: &random) ? random.next() : nil,
                         atime: time(&random), mtime: time(&random))
    }

    static func segments(_ random: inout SeededRandom) -> [FileSegment] {
        (0..<Int.random(in: 0...40, using: &random)).map { _ in
            FileSegment(logical: offset(&random), length: Int64.random(in: 0...(1 << 30), using: &random),
                        physical: Bool.random(using: &random) ? offset(&random) : nil, unwritten: Bool.random(using: &random))
        }
    }

    static func lockRange(_ random: inout SeededRandom) -> FileLockRange {
        let first = offset(&random)
        return FileLockRange(first: first, last: Bool.random(using: &random) ? FileLockRange.endOfFile
                                 : first + Int64.random(in: 0...(1 << 20), using: &random))
    }

    static func fileLock(_ random: inout SeededRandom) -> FileLock {
        FileLock(ino: random.next(), kind: Bool.random(using: &random) ? .record : .flock,
                 mode: Bool.random(using: &random) ? .shared : .exclusive, range: lockRange(&random),
                 owner: FileLockOwner(node: random.next(), owner: random.next()), handle: random.next(), pid: random.next())
    }

    static func call(_ kind: MetadataCallKind, _ random: inout SeededRandom) -> MetadataCall {
        let ino = random.next()
        let name = bytes(&random, upTo: 255)
        switch kind {
        case .lookup: return .lookup(parent: ino, name: name)
        case .attributes: return .attributes(ino: ino)
        case .setAttributes: return .setAttributes(ino: ino, changes: changes(&random))
        case .createNode:
            return .createNode(parent: ino, name: name, mode: random.next(), rdev: random.next(),
                               symlinkTarget: Bool.random(using: &random) ? bytes(&random, upTo: 4096) : nil,
                               caller: Caller(uid: random.next(), gid: random.next()))
        case .readlink: return .readlink(ino: ino)
        case .link: return .link(ino: ino, newParent: random.next(), newName: name)
        case .unlink: return .unlink(parent: ino, name: name)
        case .rmdir: return .rmdir(parent: ino, name: name)
        case .rename:
            return .rename(parent: ino, name: name, newParent: random.next(), newName: bytes(&random, upTo: 255),
                           mode: [RenameMode.replace, .noReplace, .exchange].randomElement(using: &random)!)
        case .readdir:
            return .readdir(ino: ino, cookie: Int64(bitPattern: random.next()), limit: Int.random(in: 0...100_000, using: &random),
                            plus: Bool.random(using: &random))
        case .setXattr:
            return .setXattr(ino: ino, name: name, value: bytes(&random, upTo: 65536), create: Bool.random(using: &random),
                             replace: Bool.random(using: &random))
        case .getXattr: return .getXattr(ino: ino, name: name)
        case .listXattrs: return .listXattrs(ino: ino)
        case .removeXattr: return .removeXattr(ino: ino, name: name)
        case .statistics: return .statistics
        case .opened: return .opened(ino: ino)
        case .released: return .released(ino: ino, handle: random.next())
        case .mapping: return .mapping(ino: ino, range: range(&random))
        case .prepareWrite: return .prepareWrite(ino: ino, range: range(&random))
        case .completeWrite:
            return .completeWrite(ino: ino, filled: (0..<Int.random(in: 0...20, using: &random)).map { _ in range(&random) },
                                  end: offset(&random))
        case .fallocate:
            let mode: FallocateMode = switch random.next() % 3 {
            case 0: .allocate(keepSize: Bool.random(using: &random))
            case 1: .punchHole
            default: .zeroRange(keepSize: Bool.random(using: &random))
            }
            return .fallocate(ino: ino, range: range(&random), mode: mode)
        case .commit: return .commit
        case .sync: return .sync(reportingTo: Bool.random(using: &random) ? random.next() : nil)
        case .openFiles: return .openFiles
        case .lockConflict: return .lockConflict(fileLock(&random))
        case .setLock: return .setLock(fileLock(&random), wait: Bool.random(using: &random) ? random.next() : nil)
        case .cancelLockWait: return .cancelLockWait(wait: random.next())
        case .unlock:
            return .unlock(ino: ino, kind: Bool.random(using: &random) ? .record : .flock, range: lockRange(&random),
                           owner: random.next())
        case .releaseRecordLocks: return .releaseRecordLocks(ino: ino, owner: random.next())
        case .fileLocks: return .fileLocks
        case .reclaimLocks: return .reclaimLocks((0..<Int.random(in: 0...30, using: &random)).map { _ in fileLock(&random) })
        case .withdrawLocks: return .withdrawLocks(ino: ino)
        case .depositLocks:
            return .depositLocks(ino: ino, (0..<Int.random(in: 0...30, using: &random)).map { _ in fileLock(&random) })
        case .lockDelegations: return .lockDelegations
        case .reclaimOpenFiles:
            return .reclaimOpenFiles((0..<Int.random(in: 0...30, using: &random)).map { _ in
                OpenHandle(ino: random.next(), handle: random.next())
            })
        }
    }

    static func result(_ kind: MetadataCallKind, _ random: inout SeededRandom) -> MetadataResult {
        switch kind {
        case .lookup, .attributes, .setAttributes, .createNode, .link:
            return .attributes(attributes(&random))
        case .readlink, .getXattr:
            return .bytes(bytes(&random, upTo: 4096))
        case .listXattrs:
            return .names((0..<Int.random(in: 0...30, using: &random)).map { _ in bytes(&random, upTo: 255) })
        case .readdir:
            return .entries((0..<Int.random(in: 0...50, using: &random)).map { _ in
                DirectoryEntry(name: bytes(&random, upTo: 255), ino: random.next(), mode: random.next(),
                               nextCookie: Int64(bitPattern: random.next()),
                               attributes: Bool.random(using: &random) ? attributes(&random) : nil)
            })
        case .statistics:
            return .statistics(VolumeStatistics(blockSize: random.next(), totalBlocks: random.next(), freeBlocks: random.next(),
                                                totalInodes: random.next(), freeInodes: random.next()))
        case .opened:
            return .handle(random.next())
        case .mapping:
            return .mapping(size: UInt64(offset(&random)), segments: segments(&random))
        case .prepareWrite:
            return .segments(segments(&random))
        case .openFiles:
            return .openFiles((0..<Int.random(in: 0...20, using: &random)).map { _ in
                // Paths are text: random bytes would not survive the round trip through String.
                OpenFile(node: random.next(), ino: random.next(), handles: random.next(),
                         path: Bool.random(using: &random) ? "/dir/file-\(random.next() as UInt32)" : nil)
            })
        case .lockConflict:
            return .fileLock(Bool.random(using: &random) ? fileLock(&random) : nil)
        case .setLock:
            return .granted(Bool.random(using: &random))
        case .fileLocks, .withdrawLocks:
            return .fileLocks((0..<Int.random(in: 0...30, using: &random)).map { _ in fileLock(&random) })
        case .lockDelegations:
            return .delegations((0..<Int.random(in: 0...30, using: &random)).map { _ in
                DelegatedInode(ino: random.next(), node: random.next())
            })
        case .unlink, .rmdir, .rename, .setXattr, .removeXattr, .released, .completeWrite, .fallocate, .commit, .sync,
             .cancelLockWait, .unlock, .releaseRecordLocks, .reclaimLocks, .depositLocks, .reclaimOpenFiles:
            return .done
        }
    }
}
