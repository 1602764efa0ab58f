import Primitives
import VHDFormat

/// What a file's content is, as far as `user.vhd.*` is concerned.
enum ImageLayerState: Sendable, Equatable {
    case notImage
    case image(ImageLayerFacts)
    /// Recognised as `format`, but its structures cannot be read.
    case damaged(ImageFormat, message: String)
}

/// Each file's image state, valid while the file's size, mtime and ctime stay as they were: a write,
/// truncate or rename changes one of them, and then the file is read again. `getfattr -d` asks once per
/// name, and plain files are listed over and over, so neither may cost a parse (or a read) each time.
final class ImageLayerCache: Sendable {
    struct Stamp: Hashable, Sendable {
        var size: UInt64
        var mtime: Int64
        var ctime: Int64

        init(_ attributes: InodeAttributes) {
            size = attributes.size
            mtime = attributes.mtime
            ctime = attributes.ctime
        }
    }

    private struct Entries {
        var states: [UInt64: (stamp: Stamp, state: ImageLayerState)] = [:]
        /// Insertion order, for dropping the oldest once `capacity` is reached.
        var order: [UInt64] = []
    }

    private let capacity: Int
    private let entries = Locked(Entries())

    init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    /// The state for `attributes`, from the cache or from `compute`, which runs outside the lock (it reads
    /// the file); an I/O error of the LUN is no fact about the file: it is thrown, and nothing is kept.
    func state(_ attributes: InodeAttributes, compute: () throws(Errno) -> ImageLayerState) throws(Errno) -> ImageLayerState {
        let stamp = Stamp(attributes), ino = attributes.ino
        if let cached = entries.withLock({ $0.states[ino] }), cached.stamp == stamp { return cached.state }
        let state = try compute()
        entries.withLock { entries in
            if entries.states.updateValue((stamp, state), forKey: ino) == nil {
                entries.order.append(ino)
                if entries.order.count > capacity {
                    let dropped = entries.order.prefix(capacity / 4)
                    for old in dropped { entries.states[old] = nil }
                    entries.order.removeFirst(dropped.count)
                }
            }
        }
        return state
    }
}
