import Primitives

/// The one locked box (`Primitives`, the one CSVFS itself uses), named here for every file of the tests.
typealias Locked = Primitives.Locked
