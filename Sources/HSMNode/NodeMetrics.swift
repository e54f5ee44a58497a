// The node's Prometheus metrics (docs/architecture.md, "Metrics"): counters the request
// path, the server and the replicator bump as things happen, and gauges read from the
// node's state when a scrape asks. swift-prometheus holds the values and writes the text
// format; `hsmd run --metrics-listen` serves it (MetricsServer).
//
// Counting is always on (a few relaxed atomics and one short lock per private-key
// operation, beside about a millisecond of RSA), so a node started without the listener
// behaves exactly like one with it.

import CloudHSMCore
import Foundation
import Prometheus
import Synchronization

public final class NodeMetrics: Sendable {
    /// The private-key operations counted by kind.
    public enum Operation: String, CaseIterable, Sendable {
        case rsaSign = "rsa_sign"
        case rsaDecrypt = "rsa_decrypt"
        case ecdsaSign = "ecdsa_sign"

        /// The kind of `request`, when it is a private-key operation.
        init?(_ request: HSMRequest) {
            switch request {
            case .sign(_, .ecdsa, _): self = .ecdsaSign
            case .sign: self = .rsaSign
            case .decrypt: self = .rsaDecrypt
            default: return nil
            }
        }
    }

    /// How a login attempt ended: `locked` is a login refused because the user is locked.
    public enum LoginOutcome: String, CaseIterable, Sendable {
        case success, failure, locked
    }

    /// Why the node answered 0xbb throttled.
    public enum ThrottleReason: String, CaseIterable, Sendable {
        /// Every crypto slot was busy and the waiting line full (or the node was stopping).
        case cryptoQueue = "crypto_queue"
        /// A login found every logged-in connection slot taken.
        case connectionLimit = "connection_limit"
    }

    /// Where a connection was refused for want of a slot.
    public enum Refusal: String, CaseIterable, Sendable {
        /// At accept: every slot it could take (or take over) was busy.
        case accept
        /// At login: every logged-in slot was taken (the login is answered 0xbb).
        case login
    }

    /// Upper bounds of the latency buckets: an RSA-2048 sign takes about a millisecond, a
    /// paced or queued one much longer.
    static let latencyBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
    ]

    let registry = PrometheusCollectorRegistry()
    private let succeeded: [Operation: Counter]
    private let failed: [Operation: Counter]
    private let latency: [Operation: DurationHistogram]
    private let throttled: [ThrottleReason: Counter]
    private let logins: [LoginOutcome: Counter]
    private let lockouts: Counter
    private let accepted: Counter
    private let refused: [Refusal: Counter]
    private let evicted: Counter
    private let handshakeFailures: Counter
    /// Per peer node: when its last complete sync began (wall clock), and whether the
    /// last attempt reached it.
    private let peers = Mutex<[UInt8: PeerState]>([:])
    /// Reads gauges from the node's parts just before each scrape.
    private let collectors = Mutex<[@Sendable (NodeMetrics) -> Void]>([])
    private let now: @Sendable () -> Double
    private let startedAt: Double

    private struct PeerState {
        var lastSyncStart: Double?
        var isUp = false
    }

    /// - Parameter now: the wall clock in seconds since 1970 (tests pass their own).
    public init(now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.now = now
        self.startedAt = now()
        let registry = self.registry
        var succeeded: [Operation: Counter] = [:]
        var failed: [Operation: Counter] = [:]
        var latency: [Operation: DurationHistogram] = [:]
        for operation in Operation.allCases {
            let help = "Private-key operations answered, by kind and outcome"
            succeeded[operation] = Self.counter(
                registry, "hsmd_private_key_operations_total",
                labels: [("operation", operation.rawValue), ("outcome", "success")], help: help)
            failed[operation] = Self.counter(
                registry, "hsmd_private_key_operations_total",
                labels: [("operation", operation.rawValue), ("outcome", "failure")], help: help)
            latency[operation] = Self.histogram(
                registry, "hsmd_private_key_operation_duration_seconds", labels: [("operation", operation.rawValue)],
                buckets: Self.latencyBuckets,
                help: "Time from a successful private-key request's arrival to its answer, waiting for a slot included")
        }
        self.succeeded = succeeded
        self.failed = failed
        self.latency = latency
        self.throttled = Dictionary(
            uniqueKeysWithValues: ThrottleReason.allCases.map {
                (
                    $0,
                    Self.counter(
                        registry, "hsmd_throttled_responses_total", labels: [("reason", $0.rawValue)],
                        help: "Requests answered 0xbb throttled (the client tries another node)")
                )
            })
        self.logins = Dictionary(
            uniqueKeysWithValues: LoginOutcome.allCases.map {
                (
                    $0,
                    Self.counter(
                        registry, "hsmd_logins_total", labels: [("outcome", $0.rawValue)],
                        help: "Login attempts: success, failure (wrong user, password or role), locked (user locked)")
                )
            })
        self.lockouts = Self.counter(
            registry, "hsmd_user_lockouts_total",
            help: "Users locked by a failed login on this node (the fifth distinct wrong password)")
        self.accepted = Self.counter(
            registry, "hsmd_connections_accepted_total", help: "Connections accepted and given a slot")
        self.refused = Dictionary(
            uniqueKeysWithValues: Refusal.allCases.map {
                (
                    $0,
                    Self.counter(
                        registry, "hsmd_connections_refused_total", labels: [("when", $0.rawValue)],
                        help: "Connections closed for want of a slot: at accept (every slot busy), at login (every "
                            + "logged-in slot taken)")
                )
            })
        self.evicted = Self.counter(
            registry, "hsmd_connections_evicted_total",
            help: "Connections not logged in that were closed to make room for a new one")
        self.handshakeFailures = Self.counter(
            registry, "hsmd_tls_handshake_failures_total",
            help: "Connections whose TLS handshake failed or timed out")
        registry.makeGauge(
            descriptor: Self.name("hsmd_start_time_seconds", "When the node started, in seconds since 1970")
        ).set(startedAt)
    }

    // MARK: Events

    /// One answered private-key request; `duration` counts only for successes.
    func recordOperation(_ operation: Operation, succeeded: Bool, duration: Duration) {
        if succeeded {
            self.succeeded[operation]!.increment()
            latency[operation]!.record(duration)
        } else {
            failed[operation]!.increment()
        }
    }

    func recordThrottled(_ reason: ThrottleReason) { throttled[reason]!.increment() }
    func recordLogin(_ outcome: LoginOutcome) { logins[outcome]!.increment() }
    func recordLockout() { lockouts.increment() }
    func recordAccepted() { accepted.increment() }
    func recordRefused(_ refusal: Refusal) { refused[refusal]!.increment() }
    func recordEvicted() { evicted.increment() }
    func recordHandshakeFailure() { handshakeFailures.increment() }

    // MARK: Replication

    /// Makes every per-peer series exist (at zero) before the first sync.
    func registerPeers(_ ids: [UInt8]) {
        peers.withLock { state in
            for id in ids where state[id] == nil { state[id] = PeerState() }
        }
        for id in ids {
            _ = syncs(id)
            _ = syncFailures(id)
            _ = pushFailures(id)
            _ = pulledRecords(id)
        }
    }

    /// A complete sync with `peer` that began at `startedAt` (wall clock): everything the
    /// peer held then is on this node now.
    func recordSync(peer: UInt8, startedAt: Double, pulled: Int) {
        peers.withLock { $0[peer, default: PeerState()] = PeerState(lastSyncStart: startedAt, isUp: true) }
        syncs(peer).increment()
        if pulled > 0 { pulledRecords(peer).increment(by: Int64(pulled)) }
    }

    func recordSyncFailure(peer: UInt8) {
        peers.withLock { $0[peer, default: PeerState()].isUp = false }
        syncFailures(peer).increment()
    }

    func recordPushFailure(peer: UInt8) { pushFailures(peer).increment() }

    /// The wall clock, for the start of a sync.
    func wallClock() -> Double { now() }

    private func syncs(_ peer: UInt8) -> Counter {
        Self.counter(
            registry, "hsmd_replication_syncs_total", labels: [("peer", String(peer))],
            help: "Complete syncs with each peer (inventories compared, newer records pulled)")
    }

    private func syncFailures(_ peer: UInt8) -> Counter {
        Self.counter(
            registry, "hsmd_replication_sync_failures_total", labels: [("peer", String(peer))],
            help: "Syncs with each peer that failed (peer down, refused, timed out)")
    }

    private func pushFailures(_ peer: UInt8) -> Counter {
        Self.counter(
            registry, "hsmd_replication_push_failures_total", labels: [("peer", String(peer))],
            help: "Changes this node could not push to each peer (it catches up at its next sync)")
    }

    private func pulledRecords(_ peer: UInt8) -> Counter {
        Self.counter(
            registry, "hsmd_replication_records_pulled_total", labels: [("peer", String(peer))],
            help: "Key, user and login-failure records pulled from each peer because they were newer")
    }

    // MARK: Scrapes

    /// Registers `collect`, called before each scrape to set gauges from live state.
    func addCollector(_ collect: @escaping @Sendable (NodeMetrics) -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    /// Sets the gauge `name` (made on first use).
    func set(_ name: String, labels: [(String, String)] = [], to value: Double, help: String) {
        registry.makeGauge(descriptor: Self.name(name, help), labels: labels).set(value)
    }

    /// The descriptor of a metric whose whole name is `name` ("hsmd_..._total").
    private static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    private static func counter(
        _ registry: PrometheusCollectorRegistry, _ name: String, labels: [(String, String)] = [], help: String
    ) -> Counter {
        registry.makeCounter(descriptor: Self.name(name, help), labels: labels)
    }

    private static func histogram(
        _ registry: PrometheusCollectorRegistry, _ name: String, labels: [(String, String)], buckets: [Duration],
        help: String
    ) -> DurationHistogram {
        registry.makeDurationHistogram(descriptor: Self.name(name, help), labels: labels, buckets: buckets)
    }

    /// The metrics in Prometheus' text format (version 0.0.4), gauges refreshed first.
    public func exposition() -> [UInt8] {
        for collect in collectors.withLock({ $0 }) { collect(self) }
        let now = now()
        for (id, peer) in peers.withLock({ $0 }) {
            let labels = [("peer", String(id))]
            set(
                "hsmd_replication_peer_up", labels: labels, to: peer.isUp ? 1 : 0,
                help: "1 when the last sync with the peer succeeded, else 0")
            set(
                "hsmd_replication_last_sync_timestamp_seconds", labels: labels, to: peer.lastSyncStart ?? 0,
                help: "Start of the last complete sync with the peer, seconds since 1970 (0: none yet)")
            set(
                "hsmd_replication_lag_seconds", labels: labels, to: max(0, now - (peer.lastSyncStart ?? startedAt)),
                help: "Seconds since the start of the last complete sync with the peer (since start-up if none)")
        }
        return registry.emitToBuffer()
    }
}

/// Nanoseconds on the monotonic clock, for operation latencies.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
