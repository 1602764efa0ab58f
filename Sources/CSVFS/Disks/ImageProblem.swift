/// A problem VHDFormat already worded, carried as an error into the chain's facts.
struct ImageProblem: Error, CustomStringConvertible {
    let description: String
}
