// A pthread mutex with a condition variable, for callers that must wait until a pooled
// connection comes free. Synchronization.Mutex cannot wait, and Foundation's NSCondition
// and Dispatch are off limits here (hard rule 1: this library is loaded into nginx before
// it forks).

import Glibc

final class Monitor: @unchecked Sendable {
    // Heap-allocated: pthread objects must not move, and Swift may move stored structs.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        // Deadlines on the monotonic clock, so a wall-clock jump neither wakes nor strands
        // a waiter.
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }

    /// Waits (the lock held by the caller) until signalled or until `deadline`, in
    /// monotonic milliseconds. Returns false when the deadline passed.
    func wait(untilMonotonicMilliseconds deadline: UInt64) -> Bool {
        var time = timespec(tv_sec: Int(deadline / 1000), tv_nsec: Int(deadline % 1000) * 1_000_000)
        return pthread_cond_timedwait(condition, mutex, &time) != ETIMEDOUT
    }

    func broadcast() { pthread_cond_broadcast(condition) }
}

/// Milliseconds on CLOCK_MONOTONIC: the clock the monitor's deadlines use.
func monotonicNow() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1000 + UInt64(time.tv_nsec) / 1_000_000
}
