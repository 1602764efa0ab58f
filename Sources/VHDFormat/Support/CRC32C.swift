import Primitives

/// CRC-32C of VHDX headers, region tables and log entries: the one implementation, in `Primitives`
/// (shared with CSVFS), named here for every file of the module.
typealias CRC32C = Primitives.CRC32C
