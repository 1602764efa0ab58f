import Primitives

// The thread-safe box, the pthread lock and CRC-32C are `Primitives`' (shared with LockManager and
// VHDFormat), named here for every file of the module.
typealias Lock = Primitives.Lock
typealias Locked = Primitives.Locked
typealias CRC32C = Primitives.CRC32C
