import ClusterTransport
import Crypto
import NIOCore

/// What the transport's tag costs per frame: encode+decode of a frame the size of a DLM request,
/// with and without its tag, in one run (the untagged figure is the baseline).
enum FrameCost {
    static func measure(count: Int = 200_000) throws -> String {
        let frame = Frame(service: .lockManager, kind: .oneWay, payload: ByteBuffer(bytes: Array(repeating: 0x5A, count: 60)))
        func run(tagged: Bool, count: Int) throws -> Double {
            var send: FrameProtection? = tagged ? FrameProtection(key: SymmetricKey(size: .bits256)) : nil
            var receive = send
            var buffer = ByteBuffer()
            let start = ContinuousClock.now
            for _ in 0..<count {
                try frame.encode(into: &buffer, protection: &send)
                guard try Frame.next(from: &buffer, maxFrame: Transport.maxFrame, protection: &receive) != nil else {
                    throw TransportError.malformed("a frame did not decode")
                }
                buffer.clear()
            }
            let d = ContinuousClock.now - start
            return (Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9) / Double(count)
        }
        _ = try run(tagged: true, count: count / 10)
        let plain = try run(tagged: false, count: count), tagged = try run(tagged: true, count: count)
        return "frame_ns_untagged=\(Int(plain)) frame_ns_tagged=\(Int(tagged)) tag_ns_per_frame=\(Int(tagged - plain)) (encode+decode, 60-byte payload, one thread)"
    }
}
