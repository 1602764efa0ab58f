import Dispatch
import Primitives

/// Runs async work from a synchronous command and waits for it: the FUSE loop and ArgumentParser's `run`
/// are synchronous, the cluster's membership and transport are async. The calling thread is not one of
/// the cooperative pool's, so waiting here starves nothing.
func blocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
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

func blocking(_ work: @escaping @Sendable () async -> Void) {
    try? blocking { () async throws in await work() }
}
