// The pool against fake nodes that replicate token keys: least-outstanding selection,
// mark-down and probe-back-in with backoff (on a manual clock), throttle retry, session
// keys pinned to their connection, the connection bound, no blind retry of key creation,
// and forked children with their own connections.

import CloudHSMCore
import Foundation
import OpenSSLKit
import Synchronization
import XCTest

@testable import HSMClient

/// A clock the test moves by hand; sleeps are recorded and advance it.
final class ManualClock: Sendable {
    let time = Mutex<UInt64>(1_000)
    let pauses = Mutex<[Int]>([])

    var clock: PoolClock {
        PoolClock(
            now: { [self] in time.withLock { $0 } },
            sleep: { [self] milliseconds in
                pauses.withLock { $0.append(milliseconds) }
                time.withLock { $0 += UInt64(milliseconds) }
            })
    }

    func advance(_ milliseconds: UInt64) { time.withLock { $0 += milliseconds } }
}

final class ClusterPoolTests: XCTestCase {
    private static let pki = Result { try TestPKI() }
    private var crypto: CryptoContext!
    private var nodes: [FakeNode] = []
    private var manual = ManualClock()

    override func setUpWithError() throws {
        crypto = try CryptoContext()
        let pki = try Self.pki.get()
        nodes = try (0..<3).map { try FakeNode(nodeID: $0, pki: pki, crypto: crypto) }
        replicate()
        manual = ManualClock()
    }

    override func tearDown() {
        for node in nodes { node.stop() }
    }

    private func replicate() {
        for node in nodes { node.withState { $0.replicas = nodes.filter { $0 !== node } } }
    }

    private func makeClient(ports: [UInt16]? = nil, maxConnections: Int = 8) throws -> ClusterClient {
        try makeFakeClusterClient(
            nodes: (ports ?? nodes.map(\.port)).enumerated().map { ($0.offset, $0.element) },
            caPath: try Self.pki.get().caPath,
            settings: [
                "connect_timeout_ms = 2000", "operation_timeout_ms = 5000",
                "max_connections_per_node = \(maxConnections)",
            ], crypto: crypto, clock: manual.clock)
    }

    private func signs() -> [UInt64] { nodes.map { $0.withState { $0.signCount } } }

    func testConfigurationBoundsTheConnections() throws {
        let text = "cluster_id = c\ntrust_anchor = ca.crt\nnode = 0 h:1\nmax_connections_per_node = 3"
        XCTAssertEqual(try ClusterConfiguration(text: text, baseDirectory: "/").maxConnectionsPerNode, 3)
        let fallback = try ClusterConfiguration(
            text: "cluster_id = c\ntrust_anchor = ca.crt\nnode = 0 h:1", baseDirectory: "/")
        XCTAssertEqual(fallback.maxConnectionsPerNode, 8)
        XCTAssertThrowsError(
            try ClusterConfiguration(text: text.replacingOccurrences(of: "= 3", with: "= 0"), baseDirectory: "/"))
    }

    /// The node with the fewest outstanding requests wins; ties rotate over every node.
    func testLeastOutstandingSelection() throws {
        let client = try makeClient()
        client.channel(0)!.outstanding.store(3, ordering: .relaxed)
        client.channel(1)!.outstanding.store(1, ordering: .relaxed)
        client.channel(2)!.outstanding.store(2, ordering: .relaxed)
        for _ in 0..<5 { XCTAssertEqual(client.pick(excluding: [])?.node.id, 1) }
        XCTAssertEqual(client.pick(excluding: [1])?.node.id, 2)
        client.channel(1)!.outstanding.store(2, ordering: .relaxed)
        // Nodes 1 and 2 tie: both are chosen in turn, never node 0.
        let picks = (0..<6).compactMap { _ in client.pick(excluding: [])?.node.id }
        XCTAssertEqual(Set(picks), [1, 2])
        for channelID in 0..<3 { client.channel(channelID)!.outstanding.store(0, ordering: .relaxed) }
        XCTAssertEqual(Set((0..<6).compactMap { _ in client.pick(excluding: [])?.node.id }), [0, 1, 2])
    }

    /// With no load to see, a fresh client's first request may go to any node: each
    /// process starts its rotation at a random place. (A fixed start sent every one-shot
    /// process to the same node.) 60 clients all starting on one or two of three nodes
    /// happens by chance once in 10^10 runs.
    func testFreshClientsStartTheirRotationAtRandomNodes() throws {
        let firsts = try (0..<60).map { _ in try makeClient().pick(excluding: [])?.node.id }
        XCTAssertEqual(Set(firsts), [0, 1, 2], "\(firsts)")
    }

    /// Workers forked from one parent do not all start where the parent's rotation stands:
    /// each child starts again at a random place (16 children on one node: 1 in 10^7).
    func testForkedChildrenStartTheirRotationAtRandomNodes() throws {
        let client = try makeClient()
        _ = client.pick(excluding: [])
        var children: [pid_t] = []
        for _ in 0..<16 {
            let pid = fork()
            if pid == 0 {
                client.resetAfterFork()
                _exit(Int32(client.pick(excluding: [])?.node.id ?? 99))
            }
            XCTAssertGreaterThan(pid, 0)
            children.append(pid)
        }
        var firsts: [Int32] = []
        for pid in children {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            firsts.append((status >> 8) & 0xff)
        }
        XCTAssertGreaterThan(Set(firsts).count, 1, "\(firsts)")
        XCTAssertTrue(Set(firsts).isSubset(of: [0, 1, 2]), "\(firsts)")
    }

    /// Many threads through one client: every node serves a fair share, and a slow node,
    /// whose requests stay outstanding longer, gets less.
    func testLoadSpreadsAndAvoidsASlowNode() throws {
        let client = try makeClient()
        let key = try makeTokenKey(client)
        let before = signs()
        let failures = Atomic<Int>(0)
        runThreads(4, each: 60) {
            if case .failure = signOnce(client, key).result { failures.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        let served = zip(signs(), before).map { $0 - $1 }
        XCTAssertEqual(served.reduce(0, +), 240)
        // A fair share is 80. Least-outstanding routing rightly gives less to a node whose
        // process the scheduler starves, so on a loaded machine the bound is well below fair;
        // a node left out of the rotation would serve none.
        for count in served { XCTAssertGreaterThanOrEqual(count, 24, "\(served)") }
        XCTAssertGreaterThan(nodes.map { $0.withState { $0.maxSignsInProgress } }.max()!, 0)

        nodes[0].withState { $0.signDelayMicroseconds = 30_000 }
        let slowBefore = signs()
        runThreads(4, each: 30) {
            if case .failure = signOnce(client, key).result { failures.add(1, ordering: .relaxed) }
        }
        let slowServed = zip(signs(), slowBefore).map { $0 - $1 }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        XCTAssertLessThan(slowServed[0], min(slowServed[1], slowServed[2]), "\(slowServed)")
    }

    /// A refused node is marked down and skipped; it is probed after 250 ms, then 500,
    /// 1000... (each failed probe doubles the wait), and back in rotation once it answers.
    func testMarkDownAndProbeBackInWithBackoff() throws {
        // Node 2's port: a fake started and stopped, so nothing listens there yet.
        let port = nodes[2].port
        nodes[2].stop()
        let client = try makeClient()
        let key = try makeTokenKey(client)
        var attemptsOnTwo = 0
        for _ in 0..<6 {
            let outcome = signOnce(client, key)
            XCTAssertNoThrow(try outcome.get(), "\(outcome)")
            attemptsOnTwo += outcome.attempts.filter { $0.nodeID == 2 }.count
        }
        XCTAssertEqual(attemptsOnTwo, 1, "tried once, then skipped while down")
        var stats = client.statistics()[2]
        XCTAssertTrue(stats.isDown)
        XCTAssertEqual(stats.probes, 0)
        XCTAssertEqual(client.channel(2)!.health.withLock { $0.backoff }, 250)

        manual.advance(249)
        _ = signOnce(client, key)
        XCTAssertEqual(client.statistics()[2].probes, 0, "not before the backoff elapsed")
        manual.advance(1)
        XCTAssertNoThrow(try signOnce(client, key).get())
        XCTAssertEqual(client.statistics()[2].probes, 1)
        XCTAssertEqual(client.channel(2)!.health.withLock { $0.backoff }, 500)
        manual.advance(499)
        _ = signOnce(client, key)
        XCTAssertEqual(client.statistics()[2].probes, 1)
        manual.advance(1)
        _ = signOnce(client, key)
        XCTAssertEqual(client.statistics()[2].probes, 2)
        XCTAssertEqual(client.channel(2)!.health.withLock { $0.backoff }, 1000)

        // The node comes back on its port; after the backoff one probe brings it in.
        let revived = try FakeNode(nodeID: 2, pki: try Self.pki.get(), crypto: crypto, port: port)
        nodes[2] = revived
        replicate()
        // The key was made while node 2 was away: it catches up.
        revived.catchUp(from: nodes[0])
        manual.advance(1000)
        let before = signs()
        for _ in 0..<9 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        stats = client.statistics()[2]
        XCTAssertFalse(stats.isDown, "\(stats)")
        XCTAssertEqual(stats.probes, 3)
        XCTAssertGreaterThan(signs()[2] - before[2], 0, "node 2 receives work again")
    }

    func testBackoffDoublesUpToFiveSeconds() {
        var health = NodeHealth()
        health.failed("refused", now: 0)
        var waits = [health.backoff]
        XCTAssertEqual(health.state(now: 249), .down)
        XCTAssertEqual(health.state(now: 250), .probeDue)
        // Requests that were in flight when the node went down do not lengthen the wait.
        health.failed("reset", now: 10)
        XCTAssertEqual(health.backoff, 250)
        for step in 0..<7 {
            XCTAssertTrue(health.claimProbe(now: UInt64(100_000 * (step + 1))))
            XCTAssertFalse(health.claimProbe(now: UInt64(100_000 * (step + 1))), "one prober at a time")
            health.probeFailed("refused", now: UInt64(100_000 * (step + 1)))
            waits.append(health.backoff)
        }
        XCTAssertEqual(waits, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000])
        health.answered()
        XCTAssertEqual(health.state(now: 0), .up)
    }

    /// Throttled and not-yet-replicated answers move on to another node at once; when every
    /// node answers so, the client pauses (5, 10, 20 ... ms) between rounds and finally
    /// says no node could serve, naming each node's reason.
    func testThrottledAnswersMoveToAnotherNode() throws {
        let client = try makeClient()
        let key = try makeTokenKey(client)
        nodes[0].withState { $0.throttled = [.sign] }
        nodes[1].withState { $0.notReplicated = [.sign] }
        for _ in 0..<9 {
            let outcome = signOnce(client, key)
            XCTAssertNoThrow(try outcome.get(), "\(outcome)")
            XCTAssertEqual(outcome.node?.id, 2)
        }
        let stats = client.statistics()
        XCTAssertGreaterThan(stats[0].busyAnswers + stats[1].busyAnswers, 0)
        XCTAssertEqual(stats.map(\.isDown), [false, false, false], "busy is not down")
        XCTAssertEqual(manual.pauses.withLock { $0 }, [])

        nodes[2].withState { $0.throttled = [.sign] }
        let outcome = signOnce(client, key)
        XCTAssertEqual(outcome.code, .noNodeAvailable)
        XCTAssertEqual(outcome.attempts.count, 3 * ClusterClient.maximumRounds)
        XCTAssertEqual(manual.pauses.withLock { $0 }, [5, 10, 20, 40, 80, 160, 200])
        let detail = outcome.result.failureDetail
        for id in 0..<3 { XCTAssertTrue(detail.contains("node \(id) (127.0.0.1:\(nodes[id].port)): 0x"), detail) }
        XCTAssertTrue(detail.contains("throttled"), detail)
    }

    /// A session key lives on one connection of one node: its operations go there, even
    /// from many threads at once, and die with that connection.
    func testSessionKeysStayOnTheirConnection() throws {
        let client = try makeClient()
        let created = client.create(
            .generateRSAKeyPair(
                modulusBits: 2048, publicExponent: 65537, label: "s", isSession: true, isExtractable: false))
        guard case .keyPair(let publicKey, let privateKey) = try created.get() else { return XCTFail("\(created)") }
        let pin = try XCTUnwrap(client.sessionPin(of: privateKey))
        XCTAssertEqual(pin, client.sessionPin(of: publicKey))
        XCTAssertEqual(pin.nodeID, Int(privateKey & 0xF))
        let failures = Atomic<Int>(0)
        runThreads(4, each: 10) {
            let outcome = signOnce(client, privateKey)
            if case .failure = outcome.result { failures.add(1, ordering: .relaxed) }
            if outcome.node?.id != pin.nodeID { failures.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        XCTAssertEqual(signs()[pin.nodeID], 40)

        // A wrap names a session wrapping key: it follows the wrapping key.
        let aes = client.create(
            .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "w", isSession: true, isExtractable: true))
        guard case .handle(let wrapping) = try aes.get() else { return XCTFail("\(aes)") }
        let token = try makeTokenKey(client)
        nodes[1].withState { $0.throttled = [.wrapKey] }
        XCTAssertEqual(
            client.perform(.wrapKey(key: token, wrappingKey: wrapping), key: token).node?.id,
            client.sessionPin(of: wrapping)?.nodeID)

        // The node drops the session's connection: the request in flight fails, the key is
        // gone with the session, and the client says so.
        nodes[pin.nodeID].dropConnections()
        XCTAssertEqual(signOnce(client, privateKey).code, .connectionLost)
        let lost = signOnce(client, privateKey)
        XCTAssertEqual(lost.code, .invalidHandle)
        XCTAssertTrue(lost.result.failureDetail.contains("session"), lost.result.failureDetail)
        XCTAssertNil(client.sessionPin(of: privateKey))
    }

    /// Never more than max_connections_per_node connections to a node, however many
    /// threads; requests wait for a free one.
    func testConnectionBound() throws {
        let client = try makeClient(maxConnections: 2)
        let key = try makeTokenKey(client)
        for node in nodes { node.withState { $0.signDelayMicroseconds = 5_000 } }
        let failures = Atomic<Int>(0)
        runThreads(12, each: 5) {
            if case .failure = signOnce(client, key).result { failures.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        for node in nodes {
            XCTAssertLessThanOrEqual(node.withState { $0.connectionCount }, 2)
            XCTAssertLessThanOrEqual(node.withState { $0.maxSignsInProgress }, 2)
        }
        XCTAssertGreaterThan(
            nodes.map { $0.withState { $0.maxSignsInProgress } }.max()!, 1, "connections run in parallel")
        XCTAssertEqual(client.statistics().map(\.outstanding), [0, 0, 0])
    }

    /// A node that dies with an idempotent request in flight: the request is answered by
    /// another node. One that dies with a key creation in flight: the creation reports the
    /// failure and is not repeated elsewhere.
    func testInFlightFailures() throws {
        let client = try makeClient()
        let key = try makeTokenKey(client)
        for node in nodes { node.withState { $0.dropOn = [.sign, .generateSymmetricKey] } }
        nodes[2].withState { $0.dropOn = [] }
        for _ in 0..<20 where client.statistics().map(\.isDown) != [true, true, false] {
            let outcome = signOnce(client, key)
            XCTAssertNoThrow(try outcome.get(), "\(outcome)")
            XCTAssertEqual(outcome.node?.id, 2)
        }
        XCTAssertEqual(client.statistics().map(\.isDown), [true, true, false])
        let requestsBefore = nodes.map { $0.withState { $0.requests.count } }
        // Node 2 is the only one up now and takes the creation; make it die on it.
        nodes[2].withState { $0.dropOn = [.generateSymmetricKey] }
        let created = client.create(
            .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "x", isSession: false, isExtractable: true))
        XCTAssertEqual(created.code, .connectionLost, "\(created)")
        XCTAssertEqual(created.attempts.map(\.nodeID), [2])
        XCTAssertEqual(nodes.map { $0.withState { $0.requests.count } }[0...1], requestsBefore[0...1])
    }

    /// Load the client, sign, fork 4 children that each sign on their own connections
    /// while the parent keeps signing.
    func testForkedChildrenSignOnTheirOwnConnections() throws {
        let client = try makeClient(maxConnections: 1)
        let key = try makeTokenKey(client)
        for _ in 0..<3 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        let connectionsBefore = nodes.map { $0.withState { $0.connectionCount } }.reduce(0, +)
        var children: [pid_t] = []
        for _ in 0..<4 {
            let pid = fork()
            if pid == 0 {
                // Only the client runs here: no XCTest, no Foundation.
                var ok = true
                for _ in 0..<6 { if case .failure = signOnce(client, key).result { ok = false } }
                _exit(ok ? 0 : 1)
            }
            XCTAssertGreaterThan(pid, 0)
            children.append(pid)
        }
        for _ in 0..<6 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        for pid in children {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            XCTAssertEqual(status, 0, "a child's signatures failed")
        }
        let connectionsAfter = nodes.map { $0.withState { $0.connectionCount } }.reduce(0, +)
        XCTAssertGreaterThanOrEqual(connectionsAfter - connectionsBefore, 4, "each child opened its own")
        for _ in 0..<3 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        XCTAssertEqual(client.statistics().map(\.failures), [0, 0, 0], "the parent's streams are intact")
    }
}

func signOnce(_ client: ClusterClient, _ key: KeyHandle) -> OperationOutcome {
    client.perform(.sign(key: key, mechanism: .pkcs1(digest: .sha256), data: Array(repeating: 7, count: 32)), key: key)
}

/// Runs `body` `each` times on each of `count` threads and waits for all.
func runThreads(_ count: Int, each: Int, _ body: @escaping @Sendable () -> Void) {
    let group = DispatchGroup()
    for _ in 0..<count {
        group.enter()
        Thread {
            for _ in 0..<each { body() }
            group.leave()
        }.start()
    }
    group.wait()
}

extension Result where Failure == HSMError {
    var failureDetail: String {
        if case .failure(let error) = self { return error.description }
        return ""
    }
}
