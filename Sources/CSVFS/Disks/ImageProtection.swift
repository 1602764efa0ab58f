import Primitives

/// Keeps every image below an open differencing disk read-only on every node, as the kernel keeps a running
/// program's file (ETXTBSY): a node with such a child open protects each image below it, and a node that
/// writes an image (opens it for writing, truncates it) claims it for writing; the two exclude each other
/// cluster-wide, and neither waits for the other.
public protocol ImageProtection: Sendable {
    /// Whether this node now protects image `ino` (false: a node writes it). Kept until `unprotect`.
    func protect(_ ino: UInt64) throws(Errno) -> Bool
    func unprotect(_ ino: UInt64)
    /// Whether this node now writes image `ino` (false: some node protects it). Kept until `doneWriting`.
    func startWriting(_ ino: UInt64) throws(Errno) -> Bool
    func doneWriting(_ ino: UInt64)
}

/// What the open handles of this node claim of images: per handle, the image it writes and the images below
/// it that it keeps read-only.
final class ImageClaims: Sendable {
    private struct Claim {
        var writing: UInt64?
        var protecting: [UInt64] = []
    }

    private let images: DiskAttributes
    private let protection: any ImageProtection
    private let claims = Locked<[UInt64: Claim]>([:])

    init(images: DiskAttributes, protection: any ImageProtection) {
        self.images = images
        self.protection = protection
    }

    /// Before handle `handle` on file `ino` is answered: an image opened for writing must be protected by no
    /// node, and an image with parents protects them while it is open. ETXTBSY when a claim is refused.
    func opening(_ ino: UInt64, handle: UInt64, writable: Bool) throws(Errno) {
        guard let parents = try images.parentFiles(of: ino) else { return }
        var claim = Claim()
        do throws(Errno) {
            if writable {
                guard try protection.startWriting(ino) else { throw Errno.textBusy }
                claim.writing = ino
            }
            for parent in parents {
                guard try protection.protect(parent) else { throw Errno.textBusy }
                claim.protecting.append(parent)
            }
        } catch {
            give(claim)
            throw error
        }
        let kept = claim
        claims.withLock { $0[handle] = kept }
    }

    /// The image handle `handle` was opened to write, if it was.
    func writtenImage(handle: UInt64) -> UInt64? {
        claims.withLock { $0[handle]?.writing }
    }

    func released(handle: UInt64) {
        if let claim = claims.withLock({ $0.removeValue(forKey: handle) }) { give(claim) }
    }

    /// Before a truncate of file `ino`: refused (ETXTBSY) while it is an image some node protects.
    func truncating(_ ino: UInt64) throws(Errno) {
        guard try images.isImage(ino) else { return }
        guard try protection.startWriting(ino) else { throw Errno.textBusy }
        protection.doneWriting(ino)
    }

    private func give(_ claim: Claim) {
        if let writing = claim.writing { protection.doneWriting(writing) }
        for parent in claim.protecting { protection.unprotect(parent) }
    }
}
