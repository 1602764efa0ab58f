import CSVFS
import LockManager
import Logging
import Primitives

/// `ImageProtection` through the DLM: one lock per image (`b<ino>`), PR by the nodes that protect it, CW by
/// the nodes that write it. PR goes with PR and CW with CW, never one with the other, and both are asked
/// without queueing: a refusal is ETXTBSY at once, nobody is called back, nothing waits. Each node holds
/// at most one lock of each kind per image, counted over its handles.
final class ImageProtectionLocks: ImageProtection {
    private struct Claim {
        var handle: LockHandle
        var count: Int
    }

    private struct Claims {
        var protecting: [UInt64: Claim] = [:]
        var writing: [UInt64: Claim] = [:]
    }

    private let client: LockClient
    private let logger: Logger
    /// Held across a DLM request, so two handles of this node never ask for the same lock twice.
    private let claims = Locked(Claims())
    /// How long a refusal-or-grant may take (longer only while the DLM recovers).
    static let requestTimeout: Duration = .seconds(10)

    init(client: LockClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    func protect(_ ino: UInt64) throws(Errno) -> Bool {
        try claim(ino, mode: .pr, in: \.protecting)
    }

    func unprotect(_ ino: UInt64) {
        give(ino, in: \.protecting)
    }

    func startWriting(_ ino: UInt64) throws(Errno) -> Bool {
        try claim(ino, mode: .cw, in: \.writing)
    }

    func doneWriting(_ ino: UInt64) {
        give(ino, in: \.writing)
    }

    private func claim(_ ino: UInt64, mode: LockMode, in kind: WritableKeyPath<Claims, [UInt64: Claim]>) throws(Errno) -> Bool {
        try claims.withLock { (claims) throws(Errno) -> Bool in
            if claims[keyPath: kind][ino] != nil {
                claims[keyPath: kind][ino]!.count += 1
                return true
            }
            guard let handle = try request(ino, mode: mode) else { return false }
            claims[keyPath: kind][ino] = Claim(handle: handle, count: 1)
            return true
        }
    }

    private func give(_ ino: UInt64, in kind: WritableKeyPath<Claims, [UInt64: Claim]>) {
        claims.withLock { claims in
            guard var claim = claims[keyPath: kind][ino] else { return }
            claim.count -= 1
            if claim.count > 0 {
                claims[keyPath: kind][ino] = claim
                return
            }
            claims[keyPath: kind][ino] = nil
            // Waited for: a claim of the other kind by this node right after must find the lock gone.
            let handle = claim.handle
            do {
                try blocking { [client] in try await client.unlock(handle) }
            } catch {
                logger.warning("unlocking the image lock of inode \(ino) failed: \(error)")
            }
        }
    }

    /// The lock, or nil when another node holds it in the other mode.
    private func request(_ ino: UInt64, mode: LockMode) throws(Errno) -> LockHandle? {
        do {
            return try blocking { [client] in
                try await client.lock(InodeLock.image.resource(ino), mode: mode, flags: .noQueue, timeout: Self.requestTimeout).0
            }
        } catch LockError.wouldBlock {
            return nil
        } catch {
            logger.error("no answer for the image lock of inode \(ino): \(error)")
            throw .io
        }
    }
}
