// lockbench: the latency of file locks, for bench/lock-bench.sh.
//
//   lockbench uncontended FILE [--count N]
//       N times: lock bytes 0-99 for writing (F_SETLK, never waits), unlock them; once with OFD locks, once with
//       POSIX record locks. Prints one line per kind: `ofd p50_us=... p99_us=... mean_us=... n=N`.
//   lockbench bounce FILE_A FILE_B [--count N] [--settle-us U]
//       Two threads, A with its own open file description of FILE_A, B of FILE_B (one file through two nodes'
//       mounts, or one local file twice), pass an OFD write lock on byte 0 back and forth N times. Each hand-off is
//       timed from the holder's unlock to the waiter's F_OFD_SETLKW returning. Prints `bounce p50_us=...`.
//
// Written in Swift rather than a script so that the cost of a call is the lock's, not an interpreter's, which on a
// local file would be most of what is measured.

#if canImport(Glibc)
import Glibc
#endif
import Foundation

// Glibc declares these only under _GNU_SOURCE, which Swift's Glibc module is not built with.
let F_OFD_GETLK: Int32 = 36
let F_OFD_SETLK: Int32 = 37
let F_OFD_SETLKW: Int32 = 38

/// A hand-off that takes longer than this means the lock was lost or never granted: the run fails.
let handOffTimeout: TimeInterval = 10

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("lockbench: \(message)\n".utf8))
    exit(1)
}

func usage() -> Never {
    FileHandle.standardError.write(Data("""
        usage: lockbench uncontended FILE [--count N]
               lockbench bounce FILE_A FILE_B [--count N] [--settle-us U]

        """.utf8))
    exit(2)
}

func nowNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func openFile(_ path: String) -> Int32 {
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    if fd < 0 { fail("open \(path): \(String(cString: strerror(errno)))") }
    return fd
}

/// One fcntl lock call on `fd`; any failure ends the run, since a refused uncontended lock or a failed wait would
/// make every later number meaningless.
func lockCall(_ fd: Int32, _ command: Int32, type: Int32, start: Int, length: Int, what: String) {
    var request = Glibc.flock()
    request.l_type = Int16(type)
    request.l_whence = Int16(SEEK_SET)
    request.l_start = start
    request.l_len = length
    request.l_pid = 0 // OFD locks require it; POSIX locks ignore it
    while fcntl(fd, command, &request) != 0 {
        if errno == EINTR { continue }
        fail("\(what): \(String(cString: strerror(errno)))")
    }
}

struct Summary {
    let samples: [Double] // microseconds

    init(nanoseconds: [UInt64]) {
        samples = nanoseconds.map { Double($0) / 1000 }.sorted()
    }

    func percentile(_ fraction: Double) -> Double {
        let rank = Int((fraction * Double(samples.count)).rounded(.up))
        return samples[min(max(rank, 1), samples.count) - 1]
    }

    func line(_ name: String) -> String {
        let mean = samples.reduce(0, +) / Double(samples.count)
        return name + String(format: " p50_us=%.1f p99_us=%.1f mean_us=%.1f n=%d",
                             percentile(0.50), percentile(0.99), mean, samples.count)
    }
}

// MARK: - uncontended

func uncontended(path: String, count: Int) {
    let fd = openFile(path)
    defer { close(fd) }
    for (name, setlk) in [("ofd", F_OFD_SETLK), ("posix", F_SETLK)] {
        // The first calls warm the path (the kernel's and the server's), which a steady user of locks would have warm.
        for _ in 0..<min(100, count) {
            lockCall(fd, setlk, type: Int32(F_WRLCK), start: 0, length: 100, what: "\(name) lock")
            lockCall(fd, setlk, type: Int32(F_UNLCK), start: 0, length: 100, what: "\(name) unlock")
        }
        var times = [UInt64]()
        times.reserveCapacity(count)
        for _ in 0..<count {
            let start = nowNanoseconds()
            lockCall(fd, setlk, type: Int32(F_WRLCK), start: 0, length: 100, what: "\(name) lock")
            lockCall(fd, setlk, type: Int32(F_UNLCK), start: 0, length: 100, what: "\(name) unlock")
            times.append(nowNanoseconds() - start)
        }
        print(Summary(nanoseconds: times).line(name))
    }
}

// MARK: - bounce

/// What the two threads tell each other, under one condition. Round r's holder is A for even r, B for odd r; its
/// waiter announces round r once round r - 1 is done and just before it asks for the lock, and the holder unlocks
/// only after that, so every acquisition waits for a release.
final class Handshake: @unchecked Sendable { // every field is read and written only with `condition` locked
    let condition = NSCondition()
    var requested = -1       // the last round whose waiter is about to ask for the lock
    var unlockedAt: [UInt64] // per round: when its holder began to unlock (0: not yet)
    var handOffs: [UInt64]   // per round: unlock to the waiter's lock returning
    var completed = 0        // rounds whose waiter has the lock
    var exited = 0           // threads done with their fcntl calls
    var failure: String?

    init(rounds: Int) {
        unlockedAt = Array(repeating: 0, count: rounds)
        handOffs = Array(repeating: 0, count: rounds)
    }

    func fail(_ message: String) {
        condition.lock()
        if failure == nil { failure = message }
        condition.broadcast()
        condition.unlock()
    }
}

/// One side of the ping-pong: `side` 0 holds in even rounds and waits in odd ones, side 1 the reverse.
func bouncer(side: Int, fd: Int32, rounds: Int, settleMicroseconds: UInt32, shared: Handshake) {
    for round in 0..<rounds {
        if round % 2 == side {
            // Holder: wait until the other side has announced its request, give it time to reach the lock's owner
            // (its kernel, or its node and then the coordinator) and block there, then release.
            shared.condition.lock()
            let deadline = Date(timeIntervalSinceNow: handOffTimeout)
            while shared.requested < round && shared.failure == nil {
                if !shared.condition.wait(until: deadline) {
                    shared.condition.unlock()
                    return shared.fail("round \(round): the other side never asked for the lock")
                }
            }
            let stop = shared.failure != nil
            shared.condition.unlock()
            if stop { return }
            usleep(settleMicroseconds)
            shared.condition.lock()
            shared.unlockedAt[round] = nowNanoseconds()
            shared.condition.unlock()
            lockCall(fd, F_OFD_SETLK, type: Int32(F_UNLCK), start: 0, length: 1, what: "round \(round): unlock")
        } else {
            // Waiter: ask only once the other side has the lock from the last round. Linux grants a released lock
            // to whoever asks first, not to the one asleep on it, so asking earlier could take the lock straight
            // back from under the other side's wake-up.
            shared.condition.lock()
            let deadline = Date(timeIntervalSinceNow: handOffTimeout)
            while shared.completed < round && shared.failure == nil {
                if !shared.condition.wait(until: deadline) {
                    shared.condition.unlock()
                    return shared.fail("round \(round): the other side never got the lock of round \(round - 1)")
                }
            }
            if shared.failure != nil {
                shared.condition.unlock()
                return
            }
            shared.requested = round
            shared.condition.broadcast()
            shared.condition.unlock()
            lockCall(fd, F_OFD_SETLKW, type: Int32(F_WRLCK), start: 0, length: 1, what: "round \(round): blocking lock")
            let acquired = nowNanoseconds()
            shared.condition.lock()
            let unlocked = shared.unlockedAt[round]
            if unlocked == 0 {
                shared.condition.unlock()
                return shared.fail("round \(round): the lock was granted while the other side still held it")
            }
            shared.handOffs[round] = acquired - unlocked
            shared.completed = round + 1
            shared.condition.broadcast()
            shared.condition.unlock()
        }
    }
}

func bounce(pathA: String, pathB: String, count: Int, settleMicroseconds: UInt32) {
    let fds = [openFile(pathA), openFile(pathB)]
    // Side A holds the lock before round 0; it must be free at the start.
    var probe = Glibc.flock()
    probe.l_type = Int16(F_WRLCK)
    probe.l_whence = Int16(SEEK_SET)
    probe.l_start = 0
    probe.l_len = 1
    if fcntl(fds[0], F_OFD_SETLK, &probe) != 0 { fail("first lock on \(pathA): \(String(cString: strerror(errno)))") }

    let shared = Handshake(rounds: count)
    for side in 0..<2 {
        let fd = fds[side]
        let thread = Thread {
            bouncer(side: side, fd: fd, rounds: count, settleMicroseconds: settleMicroseconds, shared: shared)
            shared.condition.lock()
            shared.exited += 1
            shared.condition.broadcast()
            shared.condition.unlock()
        }
        thread.start()
    }

    // The watchdog: a blocking lock has no timeout of its own, so this thread gives up when no hand-off completes
    // in time (exit ends the threads still asleep in fcntl).
    shared.condition.lock()
    var seen = 0
    var deadline = Date(timeIntervalSinceNow: handOffTimeout + Double(settleMicroseconds) / 1e6)
    while (shared.completed < count || shared.exited < 2) && shared.failure == nil {
        if shared.completed != seen {
            seen = shared.completed
            deadline = Date(timeIntervalSinceNow: handOffTimeout + Double(settleMicroseconds) / 1e6)
        }
        if !shared.condition.wait(until: deadline) && shared.completed == seen {
            shared.failure = seen < count ? "hand-off \(seen) took more than \(Int(handOffTimeout)) s"
                                          : "the last unlock took more than \(Int(handOffTimeout)) s"
        }
    }
    let failure = shared.failure
    let handOffs = shared.handOffs
    shared.condition.unlock()
    if let failure { fail(failure) }
    for fd in fds { close(fd) } // the last holder's lock goes with its open file description, as both threads are done
    print(Summary(nanoseconds: handOffs).line("bounce"))
}

// MARK: - arguments

var arguments = Array(CommandLine.arguments.dropFirst())
var count = 1000
var settleMicroseconds: UInt32 = 2000
var positional = [String]()
while !arguments.isEmpty {
    let argument = arguments.removeFirst()
    switch argument {
    case "--count":
        guard let value = arguments.first.flatMap({ Int($0) }), value > 0 else { usage() }
        count = value
        arguments.removeFirst()
    case "--settle-us":
        guard let value = arguments.first.flatMap({ UInt32($0) }) else { usage() }
        settleMicroseconds = value
        arguments.removeFirst()
    default:
        positional.append(argument)
    }
}
switch (positional.first, positional.count) {
case ("uncontended", 2): uncontended(path: positional[1], count: count)
case ("bounce", 3): bounce(pathA: positional[1], pathB: positional[2], count: count, settleMicroseconds: settleMicroseconds)
default: usage()
}
