// The failover deadline: the pure computation (percentile, bounds, ageing on an injected
// clock), its configuration, and the pool against fake nodes that freeze (accept TCP,
// answer nothing) or merely run slow: idempotent requests move on within the deadline,
// probes of a frozen node are bounded too, and requests that change state still wait the
// whole operation timeout.

import CloudHSMCore
import Foundation
import OpenSSLKit
import Synchronization
import XCTest

@testable import HSMClient

final class FailoverDeadlineTests: XCTestCase {
    func testDeadlineIsAMultipleOfTheP99WithinTheBounds() {
        let policy = FailoverPolicy()
        XCTAssertEqual(policy.floorMilliseconds, 200)
        XCTAssertEqual(policy.ceilingMilliseconds, 800)
        XCTAssertEqual(policy.p99Multiple, 5)
        XCTAssertEqual(policy.deadline(p99: nil), 800, "no history: the ceiling")
        XCTAssertEqual(policy.deadline(p99: 0), 200)
        XCTAssertEqual(policy.deadline(p99: 3), 200, "a fast node: the floor")
        XCTAssertEqual(policy.deadline(p99: 100), 500)
        XCTAssertEqual(policy.deadline(p99: 1000), 800, "a slow node: the ceiling")
        XCTAssertEqual(policy.deadline(p99: Int.max), 800, "no overflow")
        let custom = FailoverPolicy(floorMilliseconds: 50, ceilingMilliseconds: 2000, p99Multiple: 8)
        XCTAssertEqual(custom.deadline(p99: 10), 80)
    }

    func testWindowNeedsSixteenRecentSamples() {
        var window = LatencyWindow()
        for _ in 0..<15 { window.record(milliseconds: 10, now: 1_000) }
        XCTAssertNil(window.p99(now: 1_000), "15 samples say too little")
        window.record(milliseconds: 10, now: 1_000)
        XCTAssertEqual(window.p99(now: 1_000), 10)
    }

    func testP99IgnoresTheTopPercentAndFollowsTheRing() {
        var window = LatencyWindow()
        // 128 samples: 1 ms, except one 900 ms outlier; the nearest-rank p99 of 128 is the
        // 127th smallest, so one outlier does not move it.
        window.record(milliseconds: 900, now: 0)
        for _ in 0..<127 { window.record(milliseconds: 1, now: 0) }
        XCTAssertEqual(window.count, LatencyWindow.capacity)
        XCTAssertEqual(window.p99(now: 0), 1)
        // Two slow samples among 128 are more than 1 %.
        for _ in 0..<14 { window.record(milliseconds: 1, now: 0) }
        window.record(milliseconds: 40, now: 0)
        window.record(milliseconds: 40, now: 0)
        XCTAssertEqual(window.p99(now: 0), 40)
        // The ring forgets: 128 newer samples of 5 ms replace everything.
        for _ in 0..<128 { window.record(milliseconds: 5, now: 0) }
        XCTAssertEqual(window.p99(now: 0), 5)
    }

    func testOldSamplesNoLongerCount() {
        var window = LatencyWindow()
        for _ in 0..<32 { window.record(milliseconds: 300, now: 1_000) }
        XCTAssertEqual(window.p99(now: 1_000 + LatencyWindow.maximumAge), 300)
        XCTAssertNil(window.p99(now: 1_001 + LatencyWindow.maximumAge), "an idle minute: back to the ceiling")
        // New samples count, the old ones do not.
        for _ in 0..<16 { window.record(milliseconds: 2, now: 100_000) }
        XCTAssertEqual(window.p99(now: 100_000), 2)
    }

    func testConfigurationSettings() throws {
        let base = "cluster_id = c\ntrust_anchor = ca.crt\nnode = 0 h:1\n"
        let defaults = try ClusterConfiguration(text: base, baseDirectory: "/")
        XCTAssertEqual(defaults.failover, FailoverPolicy())
        let set = try ClusterConfiguration(
            text: base + "failover_min_ms = 100\nfailover_max_ms = 400\nfailover_p99_multiple = 8", baseDirectory: "/")
        XCTAssertEqual(set.failover, FailoverPolicy(floorMilliseconds: 100, ceilingMilliseconds: 400, p99Multiple: 8))
        let cases: [(String, String)] = [
            ("failover_min_ms = 900", "failover_min_ms (900) is above failover_max_ms (800)"),
            ("failover_p99_multiple = 0", "failover_p99_multiple must be a number from 1 to 100, found `0`"),
            ("failover_max_ms = soon", "failover_max_ms must be a number of milliseconds"),
        ]
        for (line, reason) in cases {
            XCTAssertThrowsError(try ClusterConfiguration(text: base + line, baseDirectory: "/")) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(error)")
            }
        }
    }
}

final class FailoverTests: XCTestCase {
    private static let pki = Result { try TestPKI() }
    private var crypto: CryptoContext!
    private var nodes: [FakeNode] = []
    private var manual = ManualClock()

    override func setUpWithError() throws {
        crypto = try CryptoContext()
        let pki = try Self.pki.get()
        nodes = try (0..<3).map { try FakeNode(nodeID: $0, pki: pki, crypto: crypto) }
        for node in nodes { node.withState { $0.replicas = nodes.filter { $0 !== node } } }
        manual = ManualClock()
    }

    override func tearDown() {
        for node in nodes { node.stop() }
    }

    private func makeClient(_ extra: [String] = []) throws -> ClusterClient {
        try makeFakeClusterClient(
            nodes: nodes.map { ($0.nodeID, $0.port) }, caPath: try Self.pki.get().caPath,
            settings: ["connect_timeout_ms = 3000", "operation_timeout_ms = 5000"] + extra, crypto: crypto,
            clock: manual.clock)
    }

    /// Runs `body` and returns its result with the milliseconds it took.
    private func timed<T>(_ body: () -> T) -> (T, UInt64) {
        let start = monotonicNow()
        let result = body()
        return (result, monotonicNow() - start)
    }

    /// A node frozen with signatures in flight: each waits at most the node's deadline (the
    /// floor, 200 ms, for a node that answers in a millisecond), then another node
    /// answers; the node is down, and a probe of it (TCP accepted, no handshake) is bounded
    /// the same way. Once it thaws, a probe brings it back.
    func testAFrozenNodeCostsEachSignatureAtMostItsDeadline() throws {
        let client = try makeClient()
        let key = try makeTokenKey(client)
        // History: every node answers in about a millisecond.
        for _ in 0..<90 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        for id in 0..<3 { XCTAssertEqual(client.failoverDeadline(of: client.channel(id)!), 200, "node \(id)") }

        let frozen = 1
        nodes[frozen].withState { $0.frozen = true }
        let slowest = Atomic<UInt64>(0)
        let failures = Atomic<Int>(0)
        runThreads(2, each: 30) { [self] in
            let (outcome, took) = timed { signOnce(client, key) }
            if case .failure = outcome.result { failures.add(1, ordering: .relaxed) }
            _ = slowest.max(took, ordering: .relaxed)
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        // The deadline is 200 ms; the margin is for a loaded machine.
        XCTAssertLessThan(slowest.load(ordering: .relaxed), 1000)
        var stats = client.statistics()[frozen]
        XCTAssertTrue(stats.isDown, "\(stats)")
        XCTAssertGreaterThanOrEqual(stats.failures, 1)
        XCTAssertTrue(stats.reason?.contains("did not answer within 200 ms") ?? false, "\(stats)")

        // The backoff elapses: the next signature probes the frozen node first.
        manual.advance(250)
        let (probed, took) = timed { signOnce(client, key) }
        XCTAssertNoThrow(try probed.get())
        stats = client.statistics()[frozen]
        XCTAssertEqual(stats.probes, 1)
        XCTAssertTrue(stats.isDown, "the probe found it still frozen: \(stats)")
        XCTAssertLessThan(took, 1000, "the probe is bounded by the node's deadline")

        nodes[frozen].withState { $0.frozen = false }
        manual.advance(500)
        for _ in 0..<6 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        XCTAssertFalse(client.statistics()[frozen].isDown, "probed back in after it thawed")
    }

    /// A slow node (alive, 1.2 s per answer) is left for another after its deadline for an
    /// idempotent request; a key creation, which must not be repeated elsewhere, waits for
    /// its answer.
    func testSlowNodeIdempotentMovesOnCreationWaits() throws {
        let client = try makeClient(["failover_min_ms = 100", "failover_max_ms = 300"])
        let key = try makeTokenKey(client)
        for node in nodes { node.withState { $0.delays = [.generateSymmetricKey: 1_200_000] } }
        nodes[0].withState { $0.delays[.getAttributes] = 1_200_000 }
        // No history yet: the ceiling (300 ms) applies. Ties rotate, so node 0 is asked
        // first within three reads.
        var movedOn = false
        for _ in 0..<3 where !movedOn {
            let (read, took) = timed { client.perform(.getAttributes(key), key: key) }
            XCTAssertNoThrow(try read.get())
            XCTAssertLessThan(took, 1100)
            if read.attempts.first?.nodeID == 0 {
                XCTAssertEqual(read.attempts.first?.code, .timedOut)
                XCTAssertEqual(read.attempts.last?.code, .success)
                movedOn = true
            }
        }
        XCTAssertTrue(movedOn, "node 0 was never asked first")

        let (created, createTook) = timed {
            client.create(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "k", isSession: false, isExtractable: true))
        }
        XCTAssertNoThrow(try created.get(), "\(created)")
        XCTAssertEqual(created.attempts.count, 1)
        XCTAssertGreaterThanOrEqual(createTook, 1150, "a creation is not cut at the failover deadline")
    }

    /// The last node that could answer is waited for: a cluster where every node is slow is
    /// slow, not failing.
    func testTheLastCandidateIsWaitedFor() throws {
        let client = try makeClient(["failover_min_ms = 100", "failover_max_ms = 150"])
        let key = try makeTokenKey(client)
        for node in nodes { node.withState { $0.signDelayMicroseconds = 400_000 } }
        let outcome = signOnce(client, key)
        XCTAssertNoThrow(try outcome.get(), "\(outcome.attempts.map(\.statusLine))")
        XCTAssertEqual(outcome.attempts.map(\.code), [.timedOut, .timedOut, .success])
    }
}
