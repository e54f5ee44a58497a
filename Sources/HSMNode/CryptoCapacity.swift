// The node's fixed crypto capacity: N operations at once, a bounded line of requests
// waiting for a slot, and an optional token bucket pacing them. A full line answers
// "throttled" at once, which tells the client to try another node, as a real HSM under
// load does.

import CloudHSMCore
import Foundation

/// Paces work to at most `rate` operations per second, one token at a time.
final class RateLimiter: @unchecked Sendable {
    // `next` is guarded by `lock`.
    private let interval: TimeInterval
    private let lock = NSLock()
    private var next: TimeInterval = 0

    init(operationsPerSecond rate: Double) {
        self.interval = 1 / rate
    }

    /// Waits for this caller's token.
    func acquire() {
        let now = ProcessInfo.processInfo.systemUptime
        let start = lock.withLock {
            let start = max(now, next)
            next = start + interval
            return start
        }
        if start > now { Thread.sleep(forTimeInterval: start - now) }
    }
}

/// A fixed number of crypto slots with a bounded waiting line. Work runs on the calling
/// (connection) thread once it holds a slot: handing each request to a separate worker
/// thread and back cost two context switches per operation, about a third of a node's
/// CPU at full load, for no gain in capacity.
public final class CryptoCapacity: CryptoExecutor, @unchecked Sendable {
    // `busy`, `waiting` and `isStopped` are guarded by `condition`.
    private let condition = NSCondition()
    private var busy = 0
    private var waiting = 0
    private var isStopped = false
    private let slots: Int
    private let queueLimit: Int
    private let limiter: RateLimiter?

    /// - Parameters:
    ///   - workers: crypto operations that may run at once (at least one).
    ///   - queueLimit: requests that may wait for a slot before new ones are throttled.
    ///   - operationsPerSecond: nil for unlimited.
    public init(workers: Int, queueLimit: Int, operationsPerSecond: Double?) {
        self.slots = max(1, workers)
        self.queueLimit = max(0, queueLimit)
        self.limiter = operationsPerSecond.map { RateLimiter(operationsPerSecond: $0) }
    }

    /// Runs `work` in a slot, waiting for one if all are busy.
    ///
    /// - Throws: `HSMError(.throttled)` at once when the waiting line is full.
    public func run<T>(_ work: @escaping () throws -> T) throws -> T {
        condition.lock()
        guard !isStopped else {
            condition.unlock()
            throw HSMError(.throttled, "the node is shutting down")
        }
        if busy >= slots {
            guard waiting < queueLimit else {
                condition.unlock()
                throw HSMError(.throttled, "the node's request queue is full")
            }
            waiting += 1
            while busy >= slots && !isStopped { condition.wait() }
            waiting -= 1
            if isStopped {
                condition.unlock()
                throw HSMError(.throttled, "the node is shutting down")
            }
        }
        busy += 1
        condition.unlock()
        defer {
            condition.lock()
            busy -= 1
            condition.signal()
            condition.unlock()
        }
        limiter?.acquire()
        return try work()
    }

    /// Reports the slots in use and the waiting line at each scrape of `metrics`.
    public func report(to metrics: NodeMetrics) {
        metrics.addCollector { [weak self] metrics in
            guard let self else { return }
            let (running, queued) = self.condition.withLock { (self.busy, self.waiting) }
            metrics.set(
                "hsmd_crypto_operations_running", to: Double(running), help: "Crypto operations holding a slot now")
            metrics.set(
                "hsmd_crypto_slots", to: Double(self.slots), help: "Crypto operations that may run at once (--workers)")
            metrics.set(
                "hsmd_crypto_queue_length", to: Double(queued), help: "Requests waiting for a crypto slot now")
            metrics.set(
                "hsmd_crypto_queue_max", to: Double(self.queueLimit),
                help: "Requests that may wait before new ones are answered throttled (--queue)")
        }
    }

    /// Refuses new work and wakes everything waiting for a slot.
    public func stop() {
        condition.lock()
        isStopped = true
        condition.broadcast()
        condition.unlock()
    }
}
