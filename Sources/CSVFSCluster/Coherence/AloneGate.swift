import Foundation

/// Whether calls may skip the DLM because this node is the volume's only member (nobody else caches or
/// changes anything, so there is nothing to lock against), and how many such calls are running: the switch
/// to sharing the volume waits until none is left, so every change after it is made under the locks.
final class AloneGate: @unchecked Sendable {
    // @unchecked: both fields are reached only with `condition` locked.
    private let condition = NSCondition()
    private var isOpen: Bool
    private var running = 0

    init(open: Bool) { isOpen = open }

    /// True (and counted until `leave`) while the node is alone.
    func enter() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard isOpen else { return false }
        running += 1
        return true
    }

    func leave() {
        condition.lock()
        running -= 1
        if running == 0 { condition.broadcast() }
        condition.unlock()
    }

    var admits: Bool {
        condition.lock()
        defer { condition.unlock() }
        return isOpen
    }

    func open() {
        condition.lock()
        isOpen = true
        condition.unlock()
    }

    /// Admits no more calls and returns once those running have left.
    func close() {
        condition.lock()
        isOpen = false
        while running > 0 { condition.wait() }
        condition.unlock()
    }
}
