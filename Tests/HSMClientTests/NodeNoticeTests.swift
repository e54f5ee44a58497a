// Contracts C1-C3 on the client side, against fake nodes over real TLS: a notice frame
// (request id 0) ends the connection with the node's reason; a throttled notice or a
// throttled login goes to another node without marking this one down; a notice on a
// reused connection is retried on a fresh one; a node that closes during the handshake
// is not reported as a certificate problem. And the cluster id check (C4) on every new
// connection.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMClient

final class NodeNoticeTests: XCTestCase {
    private static let pki = Result { try TestPKI() }
    private var crypto: CryptoContext!
    private var nodes: [FakeNode] = []
    private var manual = ManualClock()
    private let busy = HSMError(.throttled, "node busy: connection limit (1024 connections, 64 unauthenticated)")

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

    private func makeClient(clusterID: String = "test-cluster") throws -> ClusterClient {
        try makeFakeClusterClient(
            nodes: nodes.map { ($0.nodeID, $0.port) }, caPath: try Self.pki.get().caPath, clusterID: clusterID,
            source: "/etc/test/cluster.cfg", crypto: crypto, clock: manual.clock)
    }

    func testThrottledNoticeGoesToAnotherNodeAndSaysWhy() throws {
        let client = try makeClient()
        let key = try makeTokenKey(client)
        nodes[0].withState { $0.noticeOn = [.sign: busy] }
        for _ in 0..<9 {
            let outcome = signOnce(client, key)
            XCTAssertNoThrow(try outcome.get(), "\(outcome)")
            XCTAssertNotEqual(outcome.node?.id, 0)
        }
        let stats = client.statistics()
        XCTAssertGreaterThan(stats[0].busyAnswers, 0)
        XCTAssertEqual(stats.map(\.isDown), [false, false, false], "busy is not down")
        XCTAssertEqual(stats[0].failures, 0)

        for node in nodes { node.withState { $0.noticeOn = [.sign: busy] } }
        let outcome = signOnce(client, key)
        XCTAssertEqual(outcome.code, .noNodeAvailable)
        XCTAssertTrue(
            outcome.result.failureDetail.contains("node busy: connection limit"), outcome.result.failureDetail)
        XCTAssertEqual(client.statistics().map(\.isDown), [false, false, false])
    }

    /// A node at its connection limit says so right after the handshake (C1).
    func testNoticeAfterTheHandshakeIsBusyNotDown() throws {
        let client = try makeClient()
        let key = try makeTokenKey(client)
        nodes[2].withState { $0.noticeAfterHandshake = busy }
        nodes[2].dropConnections()
        for _ in 0..<9 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        let stats = client.statistics()[2]
        XCTAssertFalse(stats.isDown, "\(stats)")
        XCTAssertGreaterThan(stats.busyAnswers, 0)
        // A tool asking that node alone hears the node's reason.
        let direct = client.send(.generateRandom(count: 4), to: 2)
        XCTAssertEqual(code(direct), .throttled)
        XCTAssertTrue(direct.failureDetail.contains("node busy: connection limit"), direct.failureDetail)
    }

    /// A node with no room for another logged-in connection answers the login itself with
    /// 0xbb and closes (C2): the request goes elsewhere, the node stays up, and the tools'
    /// status line shows the node's reason.
    func testThrottledLoginRoutesLikeAThrottledRequest() throws {
        let setup = try makeClient()
        let key = try makeTokenKey(setup)
        nodes[1].withState { $0.throttledLogins = busy.detail }
        let client = try makeClient()
        for _ in 0..<9 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        let stats = client.statistics()[1]
        XCTAssertFalse(stats.isDown, "\(stats)")
        XCTAssertGreaterThan(stats.busyAnswers, 0)

        let results = try makeClient().login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertEqual(results.map(\.code), [.success, .throttled, .success])
        XCTAssertEqual(
            results[1].statusLine,
            "Node id 1 and err state 0x000000bb : HSM Error: \(HSMReturnCode.throttled.meaning) - \(busy.detail)")
    }

    /// A notice that arrives on a connection reused from the pool (a node that closed idle
    /// connections, for one not logged in within its deadline) costs nothing: the request
    /// was not acted on and is sent again on a fresh connection, even a key creation.
    func testNoticeOnAReusedConnectionIsRetriedOnAFreshOne() throws {
        let client = try makeClient()
        XCTAssertNoThrow(try client.send(.generateRandom(count: 4), to: 0).get())
        let deadline = HSMError(.notLoggedIn, "login deadline passed: closing the connection")
        nodes[0].noticeOpenConnections(deadline)
        XCTAssertNoThrow(try client.send(.generateRandom(count: 4), to: 0).get())
        XCTAssertEqual(nodes[0].withState { $0.connectionCount }, 2)
        XCTAssertFalse(client.statistics()[0].isDown)

        nodes[0].noticeOpenConnections(deadline)
        let created = client.create(
            .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "k", isSession: false, isExtractable: true))
        XCTAssertNoThrow(try created.get(), "\(created)")
        XCTAssertEqual(created.attempts.map(\.nodeID), [0])
    }

    func testNoticeFrameDecoding() {
        let node = NodeAddress(id: 0, host: "127.0.0.1", port: 1)
        let frame = Frame(
            operation: Frame.responseBit, requestID: 0, payload: HSMResponse.failure(busy).encodedPayload())
        XCTAssertEqual(NodeConnection.notice(frame, node: node).error, busy)
        let garbage = NodeConnection.notice(
            Frame(operation: Frame.responseBit, requestID: 0, payload: [1, 2]), node: node)
        XCTAssertEqual(garbage.error.code, .connectionLost)
        XCTAssertTrue(garbage.error.detail.contains("unreadable notice"), garbage.error.detail)
    }

    /// C3: a node that closes during the handshake (no alert) is not a certificate problem;
    /// an untrusted certificate is, and says which setting to check.
    func testClosedDuringTheHandshakeIsNotACertificateProblem() throws {
        nodes[0].withState { $0.closesBeforeHandshake = true }
        let results = try makeClient().login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertEqual(results.map(\.code), [.connectionLost, .success, .success])
        let line = results[0].statusLine
        XCTAssertTrue(line.contains("closed the connection during the TLS handshake"), line)
        for word in ["certificate", "trust"] { XCTAssertFalse(line.contains(word), line) }
        XCTAssertFalse(HSMReturnCode.tlsFailure.meaning.contains("trust"), HSMReturnCode.tlsFailure.meaning)

        let other = try TestPKI()
        let text = "cluster_id = test-cluster\ntrust_anchor = \(other.caPath)\nnode = 1 127.0.0.1:\(nodes[1].port)"
        let untrusted = try ClusterClient(
            configuration: try ClusterConfiguration(text: text, baseDirectory: "."), cryptoContext: crypto)
        let result = untrusted.login(role: .cryptoUser, user: "cu", password: "pw")[0]
        XCTAssertEqual(result.code, .tlsFailure)
        XCTAssertTrue(result.statusLine.contains("certificate is not trusted"), result.statusLine)
        XCTAssertTrue(result.statusLine.contains("trust_anchor"), result.statusLine)
    }

    /// Every node of another cluster: the login never reaches them (no credentials sent),
    /// each node's line names both cluster ids, and an operation fails with 0xe5 and that
    /// reason, not with "no node available".
    func testNodesOfAnotherClusterAreRefused() throws {
        let client = try makeClient(clusterID: "other-cluster")
        let results = client.login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertEqual(results.map(\.code), [.clusterMismatch, .clusterMismatch, .clusterMismatch])
        XCTAssertEqual(
            results[0].statusLine,
            "Node id 0 and err state 0x000000e5 : HSM Error: \(HSMReturnCode.clusterMismatch.meaning) - node 0 "
                + "(127.0.0.1:\(nodes[0].port)) belongs to cluster 'test-cluster', but /etc/test/cluster.cfg is for "
                + "cluster 'other-cluster'")
        XCTAssertEqual(nodes.map { $0.withState { $0.loginCount } }, [0, 0, 0], "no credentials sent")

        let outcome = signOnce(client, 0x12)
        XCTAssertEqual(outcome.code, .clusterMismatch)
        let detail = outcome.result.failureDetail
        for node in nodes { XCTAssertTrue(detail.contains("127.0.0.1:\(node.port)) belongs to cluster"), detail) }
        XCTAssertTrue(detail.contains("'test-cluster'") && detail.contains("'other-cluster'"), detail)
    }

    /// One node of another cluster (a wrong address in cluster.cfg): the others serve, that
    /// one is out with the reason.
    func testOneNodeOfAnotherClusterIsOut() throws {
        let setup = try makeClient()
        let key = try makeTokenKey(setup)
        let stranger = try FakeNode(nodeID: 2, pki: try Self.pki.get(), crypto: crypto, clusterID: "elsewhere")
        defer { stranger.stop() }
        var lines = ["cluster_id = test-cluster", "trust_anchor = \(try Self.pki.get().caPath)"]
        lines += ["node = 0 127.0.0.1:\(nodes[0].port)", "node = 1 127.0.0.1:\(nodes[1].port)"]
        lines.append("node = 2 127.0.0.1:\(stranger.port)")
        let client = try ClusterClient(
            configuration: try ClusterConfiguration(text: lines.joined(separator: "\n"), baseDirectory: "."),
            cryptoContext: crypto, clock: manual.clock)
        client.useCredentials(Credentials(user: "cu", password: "pw"))
        for _ in 0..<9 { XCTAssertNoThrow(try signOnce(client, key).get()) }
        let stats = client.statistics()[2]
        XCTAssertTrue(stats.isDown)
        XCTAssertTrue(stats.reason?.contains("belongs to cluster 'elsewhere'") ?? false, "\(stats)")
        XCTAssertEqual(stranger.withState { $0.loginCount }, 0)
    }

    func testPrintableClusterIDs() {
        XCTAssertEqual(ClusterClient.printable("a\u{0}b\nc"), "a\\u{0}b\\u{a}c")
        XCTAssertEqual(
            ClusterClient.printable(String(repeating: "x", count: 70)), String(repeating: "x", count: 64) + "...")
    }
}
