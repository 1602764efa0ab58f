import NIOCore

/// Messages between a node and the lock master: the lock manager's service on the cluster
/// transport (`ServiceID.lockManager`), one message per one-way transport frame. The transport
/// has authenticated the peer and checks every frame's integrity before a message is decoded.
public enum WireMessage: Equatable, Sendable {
    /// The master's first message on a connection: its epoch, and whether it is recovering.
    case welcome(epoch: Epoch, recovering: Bool)

    // Node -> master. Every lock operation names the epoch the node believes in.
    case request(LockID, process: UInt32, resource: String, mode: LockMode, flags: LockFlags, timeoutMillis: UInt32, epoch: Epoch)
    case convert(LockID, mode: LockMode, flags: LockFlags, timeoutMillis: UInt32, valueBlock: [UInt8]?, epoch: Epoch)
    case unlock(LockID, valueBlock: [UInt8]?, epoch: Epoch)
    case cancel(LockID)
    /// Recovery: a lock the node holds, re-sent to a new master.
    case recover(LockID, process: UInt32, resource: String, mode: LockMode, valueBlock: ValueBlock, epoch: Epoch)
    case recoverDone(epoch: Epoch)
    /// Asks for a listing; the master answers with `listing` frames, the last with `more == false`.
    case list

    // Master -> node.
    case granted(LockID, mode: LockMode, valueBlock: ValueBlock)
    case refused(LockID, error: LockError)
    case blocking(LockID, blocked: LockMode)
    case released(LockID)
    /// CONVDEADLK demoted this lock to NL; its conversion still waits.
    case demoted(LockID)
    /// Part of a listing: whole lines, at most `WireFormat.listingChunk` bytes of them per frame.
    case listing(String, more: Bool)
    case failure(String)
}

/// A message is the payload of one transport frame: u8 version, u8 type, fields. Big endian.
public enum WireFormat {
    public static let version: UInt8 = 2
    /// The largest message (the transport's frames may be larger; the DLM needs no more).
    public static let maxMessage = 64 * 1024
    /// Bytes of text per `listing` message: a listing of any size goes in messages that fit.
    public static let listingChunk = 32 * 1024
    /// Longest resource name, in UTF-8 bytes.
    public static let maxResourceName = 1024

    /// A message that cannot be encoded within the format's limits: an error for the caller.
    public struct EncodeError: Error, CustomStringConvertible {
        public var description: String
    }

    public struct DecodeError: Error, CustomStringConvertible {
        public var description: String
    }
}

extension WireMessage {
    var type: UInt8 {
        switch self {
        case .welcome: 3
        case .request: 10
        case .convert: 11
        case .unlock: 12
        case .cancel: 13
        case .recover: 14
        case .recoverDone: 15
        case .list: 16
        case .granted: 20
        case .refused: 21
        case .blocking: 22
        case .released: 23
        case .listing: 24
        case .failure: 25
        case .demoted: 26
        }
    }

    /// The message as a transport payload.
    public func encoded() throws -> ByteBuffer {
        var b = ByteBuffer()
        try encode(into: &b)
        return b
    }

    /// Appends the message. Every length is checked before it is written: a field longer than its
    /// u16 length, or a message over `WireFormat.maxMessage`, throws `EncodeError` (nothing traps).
    public func encode(into buf: inout ByteBuffer) throws {
        let start = buf.writerIndex
        buf.writeInteger(WireFormat.version)
        buf.writeInteger(type)
        switch self {
        case let .welcome(e, r): buf.writeInteger(e); buf.writeInteger(UInt8(r ? 1 : 0))
        case let .request(id, p, res, m, f, t, e):
            buf.writeLockID(id); buf.writeInteger(p); try buf.writeResourceName(res); buf.writeInteger(m.rawValue)
            buf.writeInteger(f.rawValue); buf.writeInteger(t); buf.writeInteger(e)
        case let .convert(id, m, f, t, vb, e):
            buf.writeLockID(id); buf.writeInteger(m.rawValue); buf.writeInteger(f.rawValue); buf.writeInteger(t)
            try buf.writeOptionalBytes(vb); buf.writeInteger(e)
        case let .unlock(id, vb, e): buf.writeLockID(id); try buf.writeOptionalBytes(vb); buf.writeInteger(e)
        case .cancel(let id): buf.writeLockID(id)
        case let .recover(id, p, res, m, vb, e):
            buf.writeLockID(id); buf.writeInteger(p); try buf.writeResourceName(res); buf.writeInteger(m.rawValue)
            try buf.writeValueBlock(vb); buf.writeInteger(e)
        case .recoverDone(let e): buf.writeInteger(e)
        case .list: break
        case let .granted(id, m, vb): buf.writeLockID(id); buf.writeInteger(m.rawValue); try buf.writeValueBlock(vb)
        case let .refused(id, err): buf.writeLockID(id); try buf.writeLockError(err)
        case let .blocking(id, m): buf.writeLockID(id); buf.writeInteger(m.rawValue)
        case .released(let id), .demoted(let id): buf.writeLockID(id)
        case let .listing(s, more): buf.writeInteger(UInt8(more ? 1 : 0)); try buf.writeBytesWithLength(Array(s.utf8))
        case .failure(let s): try buf.writeBytesWithLength(Array(s.utf8))
        }
        let length = buf.writerIndex - start
        guard length <= WireFormat.maxMessage else {
            buf.moveWriterIndex(to: start)
            throw WireFormat.EncodeError(description: "message type \(type) of \(length) bytes exceeds the \(WireFormat.maxMessage)-byte limit")
        }
    }

    /// Decodes one message (a whole transport payload). Malformed input throws, never traps.
    public static func decode(_ payload: ByteBuffer) throws -> WireMessage {
        var buf = payload
        guard buf.readableBytes <= WireFormat.maxMessage else { throw bad("message of \(buf.readableBytes) bytes (limit \(WireFormat.maxMessage))") }
        guard let version: UInt8 = buf.readInteger(), let type: UInt8 = buf.readInteger() else { throw bad("short frame") }
        guard version == WireFormat.version else { throw bad("unsupported protocol version \(version)") }
        let msg: WireMessage
        switch type {
        case 3: msg = .welcome(epoch: try buf.need(), recovering: (try buf.need() as UInt8) != 0)
        case 10:
            msg = .request(try buf.readLockID(), process: try buf.need(), resource: try buf.readString(), mode: try buf.readMode(),
                           flags: LockFlags(rawValue: try buf.need()), timeoutMillis: try buf.need(), epoch: try buf.need())
        case 11:
            msg = .convert(try buf.readLockID(), mode: try buf.readMode(), flags: LockFlags(rawValue: try buf.need()),
                           timeoutMillis: try buf.need(), valueBlock: try buf.readOptionalBytes(), epoch: try buf.need())
        case 12: msg = .unlock(try buf.readLockID(), valueBlock: try buf.readOptionalBytes(), epoch: try buf.need())
        case 13: msg = .cancel(try buf.readLockID())
        case 14:
            msg = .recover(try buf.readLockID(), process: try buf.need(), resource: try buf.readString(), mode: try buf.readMode(),
                           valueBlock: try buf.readValueBlock(), epoch: try buf.need())
        case 15: msg = .recoverDone(epoch: try buf.need())
        case 16: msg = .list
        case 20: msg = .granted(try buf.readLockID(), mode: try buf.readMode(), valueBlock: try buf.readValueBlock())
        case 21: msg = .refused(try buf.readLockID(), error: try buf.readLockError())
        case 22: msg = .blocking(try buf.readLockID(), blocked: try buf.readMode())
        case 23: msg = .released(try buf.readLockID())
        case 24:
            let more: UInt8 = try buf.need()
            msg = .listing(try buf.readString(), more: more != 0)
        case 25: msg = .failure(try buf.readString())
        case 26: msg = .demoted(try buf.readLockID())
        default: throw bad("unknown message type \(type)")
        }
        guard buf.readableBytes == 0 else { throw bad("trailing bytes in message type \(type)") }
        return msg
    }
}

func bad(_ s: String) -> WireFormat.DecodeError { WireFormat.DecodeError(description: s) }

extension ByteBuffer {
    mutating func need<T: FixedWidthInteger>() throws -> T {
        guard let v: T = readInteger() else { throw bad("truncated field") }
        return v
    }
    mutating func writeBytesWithLength(_ b: [UInt8]) throws {
        guard let n = UInt16(exactly: b.count) else {
            throw WireFormat.EncodeError(description: "a field of \(b.count) bytes exceeds its 16-bit length")
        }
        writeInteger(n)
        writeBytes(b)
    }
    mutating func writeResourceName(_ name: String) throws {
        guard name.utf8.count <= WireFormat.maxResourceName else {
            throw WireFormat.EncodeError(description: "resource name of \(name.utf8.count) bytes (limit \(WireFormat.maxResourceName))")
        }
        try writeBytesWithLength(Array(name.utf8))
    }
    mutating func readBytesWithLength() throws -> [UInt8] {
        let n: UInt16 = try need()
        guard let b = readBytes(length: Int(n)) else { throw bad("truncated bytes") }
        return b
    }
    mutating func readString() throws -> String {
        let b = try readBytesWithLength()
        guard let s = String(validating: b, as: UTF8.self) else { throw bad("invalid UTF-8") }
        return s
    }
    mutating func writeOptionalBytes(_ b: [UInt8]?) throws {
        guard let b else {
            writeInteger(UInt8(0))
            return
        }
        guard b.count <= ValueBlock.maxSize else {
            throw WireFormat.EncodeError(description: "value block of \(b.count) bytes (limit \(ValueBlock.maxSize))")
        }
        writeInteger(UInt8(1))
        try writeBytesWithLength(b)
    }
    mutating func readOptionalBytes() throws -> [UInt8]? {
        let flag: UInt8 = try need()
        guard flag != 0 else { return nil }
        let b = try readBytesWithLength()
        guard b.count <= ValueBlock.maxSize else { throw bad("value block too large") }
        return b
    }
    mutating func writeValueBlock(_ v: ValueBlock) throws {
        guard v.bytes.count <= ValueBlock.maxSize else {
            throw WireFormat.EncodeError(description: "value block of \(v.bytes.count) bytes (limit \(ValueBlock.maxSize))")
        }
        writeInteger(UInt8(v.valid ? 1 : 0))
        try writeBytesWithLength(v.bytes)
    }
    mutating func readValueBlock() throws -> ValueBlock {
        let valid: UInt8 = try need()
        let b = try readBytesWithLength()
        guard b.count <= ValueBlock.maxSize else { throw bad("value block too large") }
        return ValueBlock(bytes: b, valid: valid != 0)
    }
    mutating func writeLockID(_ id: LockID) { writeInteger(id.node); writeInteger(id.serial) }
    mutating func readLockID() throws -> LockID { LockID(node: try need(), serial: try need()) }
    mutating func readMode() throws -> LockMode {
        let raw: UInt8 = try need()
        guard let m = LockMode(rawValue: raw) else { throw bad("bad lock mode \(raw)") }
        return m
    }
    mutating func writeLockError(_ e: LockError) throws {
        switch e {
        case .wouldBlock: writeInteger(UInt8(1))
        case .deadlock: writeInteger(UInt8(2))
        case .staleEpoch(let c): writeInteger(UInt8(3)); writeInteger(c)
        case .unknownLock: writeInteger(UInt8(4))
        case .duplicateLock: writeInteger(UInt8(5))
        case .notGranted: writeInteger(UInt8(6))
        case .timedOut: writeInteger(UInt8(7))
        case .cancelled: writeInteger(UInt8(8))
        case .fenced: writeInteger(UInt8(9))
        case .unauthenticated: writeInteger(UInt8(10))
        case .disconnected: writeInteger(UInt8(11))
        case .protocolError(let s): writeInteger(UInt8(12)); try writeBytesWithLength(Array(s.truncatedForWire.utf8))
        case .limitReached(let s): writeInteger(UInt8(13)); try writeBytesWithLength(Array(s.truncatedForWire.utf8))
        }
    }
    mutating func readLockError() throws -> LockError {
        let code: UInt8 = try need()
        switch code {
        case 1: return .wouldBlock
        case 2: return .deadlock
        case 3: return .staleEpoch(current: try need())
        case 4: return .unknownLock
        case 5: return .duplicateLock
        case 6: return .notGranted
        case 7: return .timedOut
        case 8: return .cancelled
        case 9: return .fenced
        case 10: return .unauthenticated
        case 11: return .disconnected
        case 12: return .protocolError(try readString())
        case 13: return .limitReached(try readString())
        default: throw bad("bad error code \(code)")
        }
    }
}

extension String {
    /// At most 1,000 UTF-8 bytes, cut at a character boundary (a cut inside a character would
    /// not decode as UTF-8 at the other end).
    var truncatedForWire: String {
        guard utf8.count > 1000 else { return self }
        var out = ""
        for c in self {
            if out.utf8.count + c.utf8.count > 1000 { break }
            out.append(c)
        }
        return out
    }
}

extension WireMessage {
    /// A listing's text as `listing` frames of whole lines, each within `WireFormat.listingChunk`
    /// bytes (a longer line, which the resource-name limit rules out, is cut at characters).
    public static func listingFrames(_ lines: [String]) -> [WireMessage] {
        var frames: [WireMessage] = []
        var chunk = ""
        func emit() { frames.append(.listing(chunk, more: true)); chunk = "" }
        for line in lines {
            var piece = line.utf8.count < WireFormat.listingChunk ? line : line.truncatedForWire
            piece += "\n"
            if chunk.utf8.count + piece.utf8.count > WireFormat.listingChunk { emit() }
            chunk += piece
        }
        frames.append(.listing(chunk, more: false))
        return frames
    }
}
