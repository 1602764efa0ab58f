#if canImport(Glibc)
import Glibc
#endif
import ClusterTransport
import Crypto
import DLMWire
import NIOCore

/// The key the tagged seeds are sealed with, so the fuzzer starts from frames whose tags pass.
private func fuzzKey() -> SymmetricKey { SymmetricKey(data: [UInt8](repeating: 0x11, count: 32)) }

/// The input is a byte stream as a peer would send it: frames are cut from it with the transport's
/// frame decoder, under both bounds (before and after authentication) and with tags checked, until
/// it ends or fails. Each frame's payload goes to the decoder of its service (the handshake's
/// control messages, or the DLM's messages). Malformed input must throw, never trap; what decodes
/// must encode again (within every length limit) to what decodes to the same.
private func exercise(_ input: ByteBuffer, maxFrame: Int, tagged: Bool) {
    var buffer = input
    var protection: FrameProtection? = tagged ? FrameProtection(key: fuzzKey()) : nil
    while true {
        let frame: Frame?
        do { frame = try Frame.next(from: &buffer, maxFrame: maxFrame, protection: &protection) } catch { return }
        guard let frame else { return }
        checkFrame(frame)
        if frame.kind == .control {
            guard let m = try? ControlMessage.decode(frame.payload) else { continue }
            let again = roundTrip(m)
            if roundTrip(again) != again { fatalError("\(again) does not survive encode+decode") }
        } else {
            guard let m = try? WireMessage.decode(frame.payload) else { continue }
            let again = roundTrip(m)
            // Texts are cut to what the wire carries on the first encoding; after that, exact.
            if roundTrip(again) != again { fatalError("\(again) does not survive encode+decode") }
        }
    }
}

/// A decoded frame encodes again, tagged or not, to one whole frame with the same fields.
private func checkFrame(_ frame: Frame) {
    for tagged in [false, true] {
        var send: FrameProtection? = tagged ? FrameProtection(key: fuzzKey()) : nil
        var receive = send
        var out = ByteBuffer()
        do {
            try frame.encode(into: &out, protection: &send)
            guard let back = try Frame.next(from: &out, maxFrame: Transport.maxFrame, protection: &receive), out.readableBytes == 0,
                  back.service == frame.service, back.kind == frame.kind, back.requestID == frame.requestID,
                  back.timeoutMillis == frame.timeoutMillis, back.payload == frame.payload else {
                fatalError("a frame does not survive encode+decode (tagged: \(tagged))")
            }
        } catch {
            fatalError("a decoded frame does not encode and decode again: \(error)")
        }
    }
}

private func roundTrip(_ message: WireMessage) -> WireMessage {
    do {
        return try WireMessage.decode(try message.encoded())
    } catch {
        fatalError("\(message), decoded from a frame, does not encode and decode again: \(error)")
    }
}

private func roundTrip(_ message: ControlMessage) -> ControlMessage {
    do {
        return try ControlMessage.decode(try message.encode())
    } catch {
        fatalError("\(message), decoded from a frame, does not encode and decode again: \(error)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    exercise(input, maxFrame: Transport.maxFrameBeforeAuth, tagged: false)
    exercise(input, maxFrame: Transport.maxFrame, tagged: false)
    exercise(input, maxFrame: Transport.maxFrame, tagged: true)
    return 0
}

/// The handshake's messages, one of each.
private func controlSamples() -> [ControlMessage] { [
    .hello(server: PeerIdentity(node: 1, volume: "vol-é"), nonce: Array(repeating: 7, count: 32)),
    .auth(client: PeerIdentity(node: 3, volume: ""), nonce: Array(repeating: 1, count: 32), proof: Array(repeating: 2, count: 32)),
    .welcome(proof: Array(repeating: 3, count: 32)),
    .refusal(Refusal(.authentication, "authentication failed: wrong cluster secret")),
] }

/// Writes the seed corpus: a frame of every DLM message type (`WireMessage.samples`) and of every
/// control message, all of them in one stream, and the DLM ones in a stream tagged with `fuzzKey`.
private func writeSeeds(to directory: String) -> CInt {
    var all: [UInt8] = [], tagged: [UInt8] = []
    var plain: FrameProtection?, sealed: FrameProtection? = FrameProtection(key: fuzzKey())
    var payloads: [(String, ServiceID, FrameKind, ByteBuffer)] = []
    do {
        for (i, m) in WireMessage.samples.enumerated() { payloads.append(("sample-\(i)", .lockManager, .oneWay, try m.encoded())) }
        for (i, m) in controlSamples().enumerated() { payloads.append(("control-\(i)", ServiceID(rawValue: 0), .control, try m.encode())) }
    } catch {
        print("cannot encode a sample: \(error)")
        return 1
    }
    for (name, service, kind, payload) in payloads {
        var b = ByteBuffer(), t = ByteBuffer()
        do {
            try Frame(service: service, kind: kind, payload: payload).encode(into: &b, protection: &plain)
            if kind != .control { try Frame(service: service, kind: kind, payload: payload).encode(into: &t, protection: &sealed) }
        } catch { print("cannot frame \(name): \(error)"); return 1 }
        let bytes = Array(b.readableBytesView)
        all += bytes
        tagged += Array(t.readableBytesView)
        guard write(bytes, to: "\(directory)/\(name).frame") else { return 1 }
    }
    guard write(tagged, to: "\(directory)/all-samples.tagged") else { return 1 }
    return write(all, to: "\(directory)/all-samples.stream") ? 0 : 1
}

private func write(_ bytes: [UInt8], to path: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { print("cannot create \(path)"); return false }
    defer { close(fd) }
    return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
}

@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point under the module's own name instead of `main`, so the
/// libFuzzer driver is started from here. `dlm-fuzz --write-seeds DIR` writes the seed corpus.
@_cdecl("dlm_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    if argc == 3, let flag = argv[1], String(cString: flag) == "--write-seeds", let dir = argv[2] {
        return writeSeeds(to: String(cString: dir))
    }
    var count = argc
    var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return runFuzzerDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
