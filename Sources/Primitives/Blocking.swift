import Dispatch

/// Runs async work from synchronous code and waits for it: the FUSE loop and ArgumentParser's `run` are
/// synchronous, the cluster's membership, transport and lock client are async. Call it only from a thread
/// that is not one of the cooperative pool's (a FUSE worker, a command's main thread), so waiting here
/// starves nothing.
public func blocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
    let outcome = Locked<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let result: Result<T, any Error>
        do { result = .success(try await work()) } catch { result = .failure(error) }
        outcome.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0 }!.get()
}

public func blocking(_ work: @escaping @Sendable () async -> Void) {
    try? blocking { () async throws in await work() }
}
