// The node's fixed crypto capacity: a bounded queue in front of N worker threads, paced
// by an optional token bucket. A full queue answers "throttled" at once, which tells the
// client to try another node, as a real HSM under load does.

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

/// A fixed set of worker threads taking jobs from a bounded queue.
public final class WorkerPool: CryptoExecutor, @unchecked Sendable {
    // `queue`, `idle` and `isStopped` are guarded by `condition`.
    private let condition = NSCondition()
    private var queue: [() -> Void] = []
    private var idle = 0
    private var isStopped = false
    private let queueLimit: Int
    private let limiter: RateLimiter?

    /// - Parameters:
    ///   - workers: threads doing crypto (at least one).
    ///   - queueLimit: requests that may wait for a worker before new ones are throttled.
    ///   - operationsPerSecond: nil for unlimited.
    public init(workers: Int, queueLimit: Int, operationsPerSecond: Double?) {
        self.queueLimit = max(0, queueLimit)
        self.limiter = operationsPerSecond.map { RateLimiter(operationsPerSecond: $0) }
        for index in 0..<max(1, workers) {
            // Workers keep the pool alive until stop() lets them end.
            let thread = Thread { self.workLoop() }
            thread.name = "hsm-worker-\(index)"
            thread.start()
        }
    }

    private func workLoop() {
        while true {
            condition.lock()
            idle += 1
            while queue.isEmpty && !isStopped { condition.wait() }
            idle -= 1
            if isStopped && queue.isEmpty {
                condition.unlock()
                return
            }
            let job = queue.removeFirst()
            condition.unlock()
            limiter?.acquire()
            job()
        }
    }

    /// Runs `work` on a worker and waits for it.
    ///
    /// - Throws: `HSMError(.throttled)` at once when the queue is full.
    public func run<T>(_ work: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        condition.lock()
        // Waiting jobs beyond the idle workers count against the limit.
        guard !isStopped, queue.count - idle < queueLimit else {
            condition.unlock()
            throw HSMError(.throttled, "the node's request queue is full")
        }
        queue.append {
            box.result = Result { try work() }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        guard let result = box.result else { throw HSMError(.internalError, "a worker lost its job") }
        return try result.get()
    }

    /// Lets the workers finish what is queued, then end.
    public func stop() {
        condition.lock()
        isStopped = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Carries a job's result from the worker to the waiting caller; the semaphore orders
/// the write before the read.
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
