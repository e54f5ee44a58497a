// How long an idempotent request waits for one node before the client abandons that
// connection and asks another node: a multiple of what the node normally takes (the p99
// of its recent answers), never below a floor nor above a ceiling. A frozen node (SIGSTOP,
// a hung process: TCP still accepts, nothing answers) then costs a caller at most the
// ceiling instead of the whole operation timeout. Pure, with the time passed in, like
// NodeHealth.

/// The failover bounds of `cluster.cfg` (`failover_min_ms`, `failover_max_ms`,
/// `failover_p99_multiple`).
public struct FailoverPolicy: Equatable, Sendable {
    public static let defaultFloorMilliseconds = 200
    public static let defaultCeilingMilliseconds = 800
    public static let defaultP99Multiple = 5

    /// Never abandon a node sooner: above the scheduling hiccups of a loaded machine, far
    /// above a normal operation (about a millisecond for an RSA-2048 signature).
    public var floorMilliseconds: Int
    /// Never wait longer: what one frozen node may cost a caller, with room left for the
    /// retry on another node within one second.
    public var ceilingMilliseconds: Int
    /// How many times its recent p99 a node may take before it counts as stalled.
    public var p99Multiple: Int

    public init(
        floorMilliseconds: Int = defaultFloorMilliseconds, ceilingMilliseconds: Int = defaultCeilingMilliseconds,
        p99Multiple: Int = defaultP99Multiple
    ) {
        self.floorMilliseconds = floorMilliseconds
        self.ceilingMilliseconds = ceilingMilliseconds
        self.p99Multiple = p99Multiple
    }

    /// The wait for a node whose recent p99 is `p99` milliseconds; nil (no history yet, or
    /// only old samples) gets the ceiling.
    public func deadline(p99 milliseconds: Int?) -> Int {
        guard let milliseconds else { return ceilingMilliseconds }
        let scaled = milliseconds.multipliedReportingOverflow(by: p99Multiple)
        let wanted = scaled.overflow ? ceilingMilliseconds : scaled.partialValue
        return min(ceilingMilliseconds, max(floorMilliseconds, wanted))
    }
}

/// The latencies of a node's recent answers (idempotent requests only: logins hash slowly
/// on purpose and key creation takes what it takes), in a ring of fixed size. The p99 is
/// worked out again every `refreshInterval` samples, not on every request.
struct LatencyWindow: Sendable {
    /// Below 200, so that the p99 is one of the two largest samples.
    static let capacity = 128
    /// Fewer recent samples than this say too little: the policy's ceiling applies.
    static let minimumSamples = 16
    /// Samples older than this no longer describe the node (a minute, in milliseconds).
    static let maximumAge: UInt64 = 60_000
    static let refreshInterval = 16

    private var milliseconds: [UInt32] = []
    private var recordedAt: [UInt64] = []
    private var next = 0
    private var sinceRefresh = 0
    private var newest: UInt64 = 0
    private var cachedP99: Int?

    var count: Int { milliseconds.count }

    mutating func record(milliseconds value: UInt64, now: UInt64) {
        let sample = UInt32(clamping: value)
        if milliseconds.count < Self.capacity {
            milliseconds.append(sample)
            recordedAt.append(now)
        } else {
            milliseconds[next] = sample
            recordedAt[next] = now
        }
        next = (next + 1) % Self.capacity
        newest = now
        sinceRefresh += 1
        if sinceRefresh >= Self.refreshInterval || cachedP99 == nil {
            sinceRefresh = 0
            cachedP99 = Self.percentile99(of: milliseconds, recordedAt: recordedAt, now: now)
        }
    }

    /// The 99th percentile of the samples at most `maximumAge` old when it was last worked
    /// out, or nil when there were fewer than `minimumSamples` of them, or when the node
    /// has answered nothing for `maximumAge`.
    func p99(now: UInt64) -> Int? {
        guard now &- newest <= Self.maximumAge else { return nil }
        return cachedP99
    }

    private static func percentile99(of samples: [UInt32], recordedAt: [UInt64], now: UInt64) -> Int? {
        // The nearest-rank p99 of at most `capacity` (< 200) samples is the largest or the
        // second largest, so one pass finds it: no copy, no sort, on every 16th request.
        var count = 0
        var largest: UInt32 = 0
        var secondLargest: UInt32 = 0
        for (index, sample) in samples.enumerated() where now &- recordedAt[index] <= maximumAge {
            count += 1
            if sample > largest {
                secondLargest = largest
                largest = sample
            } else if sample > secondLargest {
                secondLargest = sample
            }
        }
        guard count >= minimumSamples else { return nil }
        // The smallest sample at or above 99 % of them, counted from the top.
        let rank = (count * 99 + 99) / 100
        return Int(count - rank == 0 ? largest : secondLargest)
    }
}
