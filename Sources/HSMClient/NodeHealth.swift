// Whether a node is taken out of rotation, and when it may be probed back in. A node that
// fails (refused, reset, timeout, TLS failure) is down for a backoff that starts at 250 ms
// and doubles with every failed probe up to 5 s. Nothing runs in the background: the first
// caller that finds the backoff elapsed claims the probe and makes it.

import CloudHSMCore
import Glibc

/// The time source for backoffs and the pause between retry rounds; tests inject a manual
/// clock so that backoff can be checked without sleeping.
public struct PoolClock: Sendable {
    /// Monotonic milliseconds.
    public var now: @Sendable () -> UInt64
    /// Pauses the calling thread.
    public var sleep: @Sendable (_ milliseconds: Int) -> Void

    public init(now: @escaping @Sendable () -> UInt64, sleep: @escaping @Sendable (_ milliseconds: Int) -> Void) {
        self.now = now
        self.sleep = sleep
    }

    public static let system = PoolClock(
        now: { monotonicNow() },
        sleep: { milliseconds in
            guard milliseconds > 0 else { return }
            var time = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
            var remaining = timespec()
            while nanosleep(&time, &remaining) == -1 && errno == EINTR { time = remaining }
        })
}

struct NodeHealth: Sendable {
    static let initialBackoffMilliseconds: UInt64 = 250
    static let maximumBackoffMilliseconds: UInt64 = 5000

    enum State: Equatable {
        case up
        /// Out of rotation until the backoff elapses.
        case down
        /// Down, but the backoff elapsed and nobody is probing yet.
        case probeDue
    }

    private(set) var isDown = false
    private(set) var backoff: UInt64 = 0
    private(set) var retryAt: UInt64 = 0
    private(set) var isProbing = false
    private(set) var lastError: HSMErrorText?

    func state(now: UInt64) -> State {
        guard isDown else { return .up }
        return !isProbing && now >= retryAt ? .probeDue : .down
    }

    /// Claims the probe for the calling thread; `force` ignores the backoff (used when no
    /// node at all is up, so a recovered cluster is noticed at once).
    mutating func claimProbe(now: UInt64, force: Bool = false) -> Bool {
        guard isDown, !isProbing, force || now >= retryAt else { return false }
        isProbing = true
        return true
    }

    /// A request to an up node failed in transport: out for the initial backoff. Failures
    /// of requests that were in flight when the node went down do not lengthen the backoff;
    /// only failed probes do.
    mutating func failed(_ error: HSMError, now: UInt64) {
        failed(error.description, now: now)
        lastError = HSMErrorText(error)
    }

    mutating func failed(_ reason: String, now: UInt64) {
        lastError = HSMErrorText(reason)
        guard !isDown else { return }
        isDown = true
        backoff = Self.initialBackoffMilliseconds
        retryAt = now + backoff
    }

    mutating func probeFailed(_ error: HSMError, now: UInt64) {
        probeFailed(error.description, now: now)
        lastError = HSMErrorText(error)
    }

    mutating func probeFailed(_ reason: String, now: UInt64) {
        lastError = HSMErrorText(reason)
        isDown = true
        isProbing = false
        backoff = backoff == 0 ? Self.initialBackoffMilliseconds : min(backoff * 2, Self.maximumBackoffMilliseconds)
        retryAt = now + backoff
    }

    /// The node answered (anything at all, even an error code): it is up.
    mutating func answered() {
        isDown = false
        isProbing = false
        backoff = 0
    }

    /// Why the node is out, for `.noNodeAvailable` details.
    func reason(now: UInt64) -> String {
        let why = lastError?.text ?? "failed"
        guard isDown else { return why }
        if isProbing { return "down (\(why)); being probed" }
        let wait = retryAt > now ? retryAt - now : 0
        return "down (\(why)); next probe in \(wait) ms"
    }
}

/// A failure's text and, when it was an `HSMError`, its code and detail.
struct HSMErrorText: Sendable, Equatable {
    let text: String
    let code: HSMReturnCode?
    let detail: String?

    init(_ text: String) {
        self.text = text
        code = nil
        detail = nil
    }

    init(_ error: HSMError) {
        text = error.description
        code = error.code
        detail = error.detail
    }
}
