#if canImport(Glibc)
import Glibc
#endif
import DLMWire
import NIOCore

/// The input is a byte stream as a peer would send it: frames are cut from it with the master's
/// frame decoder, under both bounds (before and after authentication), until it ends or fails.
/// Malformed input must throw, never trap; what decodes must encode again (within every length
/// limit) to a frame that decodes to the same message.
private func exercise(_ input: ByteBuffer, maxFrame: Int) {
    var buffer = input
    while true {
        let message: WireMessage?
        do { message = try WireCodec.nextMessage(&buffer, maxFrame: maxFrame) } catch { return }
        guard let message else { return }
        let again = roundTrip(message)
        // Texts are cut to what the wire carries on the first encoding; after that, exact.
        if roundTrip(again) != again { fatalError("\(again) does not survive encode+decode") }
    }
}

private func roundTrip(_ message: WireMessage) -> WireMessage {
    var out = ByteBuffer()
    do {
        try message.encode(into: &out)
        guard let decoded = try WireCodec.nextMessage(&out), out.readableBytes == 0 else {
            fatalError("\(message) encoded to a frame that is not one whole frame")
        }
        return decoded
    } catch {
        fatalError("\(message), decoded from a frame, does not encode and decode again: \(error)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    exercise(input, maxFrame: WireFormat.maxFrameBeforeAuth)
    exercise(input, maxFrame: WireFormat.maxFrame)
    return 0
}

/// Writes the seed corpus: one frame of every message type (`WireMessage.samples`), and all of
/// them in one stream.
private func writeSeeds(to directory: String) -> CInt {
    var all: [UInt8] = []
    for (index, message) in WireMessage.samples.enumerated() {
        var b = ByteBuffer()
        do { try message.encode(into: &b) } catch { print("cannot encode sample \(index): \(error)"); return 1 }
        let bytes = Array(b.readableBytesView)
        all += bytes
        guard write(bytes, to: "\(directory)/sample-\(index).frame") else { return 1 }
    }
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
