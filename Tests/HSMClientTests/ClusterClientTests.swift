// ClusterClient against fake nodes over real TLS: login everywhere, a node down, routing
// by handle, reconnect with re-login, and a fork child that opens its own connection.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMClient

final class ClusterClientTests: XCTestCase {
    private static let pki = Result { try TestPKI() }
    private var crypto: CryptoContext!
    private var nodes: [FakeNode] = []

    override func setUpWithError() throws {
        crypto = try CryptoContext()
        let pki = try Self.pki.get()
        nodes = try (0..<2).map { try FakeNode(nodeID: $0, pki: pki, crypto: crypto) }
    }

    override func tearDown() {
        for node in nodes { node.stop() }
    }

    /// A client for the fake nodes plus, optionally, a node id whose port refuses.
    private func makeClient(deadNode: Int? = nil) throws -> ClusterClient {
        var lines = ["cluster_id = test-cluster", "trust_anchor = \(try Self.pki.get().caPath)"]
        lines += nodes.map { "node = \($0.nodeID) 127.0.0.1:\($0.port)" }
        if let deadNode { lines.append("node = \(deadNode) 127.0.0.1:1") }
        lines.append("connect_timeout_ms = 2000")
        lines.append("operation_timeout_ms = 5000")
        let configuration = try ClusterConfiguration(text: lines.joined(separator: "\n"), baseDirectory: ".")
        return try ClusterClient(configuration: configuration, cryptoContext: crypto)
    }

    func testLoginOnEveryNodeAndOneDown() throws {
        let client = try makeClient(deadNode: 5)
        XCTAssertFalse(client.isLoggedIn)
        let results = client.login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertEqual(results.map(\.code), [.success, .success, .nodeUnreachable])
        XCTAssertEqual(results.map(\.nodeID), [0, 1, 5])
        XCTAssertTrue(results[2].statusLine.hasPrefix("Node id 5 and err state 0x000000e0 : HSM Error: "))
        XCTAssertTrue(
            results[2].statusLine.hasSuffix("connect to 127.0.0.1:1: Connection refused"), results[2].statusLine)
        XCTAssertTrue(client.isLoggedIn)
        XCTAssertEqual(client.homeNode()?.id, 0)

        let wrong = try makeClient().login(role: .cryptoUser, user: "cu", password: "nope")
        XCTAssertEqual(wrong.map(\.code), [.loginFailed, .loginFailed])

        let logout = client.logout()
        XCTAssertEqual(logout.map(\.code), [.success, .success, .success])
        XCTAssertFalse(client.isLoggedIn)
    }

    func testCreateGoesToTheFirstIdleNodeAndOperationsFindTheKey() throws {
        let client = try makeClient()
        _ = client.login(role: .cryptoUser, user: "cu", password: "pw")
        // Both nodes idle: creation takes the first in configuration order.
        let created = client.create(
            .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "k", isSession: false, isExtractable: true))
        guard case .handle(let handle) = try created.get() else { return XCTFail("\(created)") }
        XCTAssertEqual(handle & 0xF, 0)
        XCTAssertEqual(created.attempts.map(\.nodeID), [0])

        // These fakes do not replicate: a key made only on node 1 is found there, whichever
        // node the balancer asks first (another node's "invalid handle" is not final).
        let onOne = client.send(
            .generateRSAKeyPair(
                modulusBits: 2048, publicExponent: 65537, label: "r", isSession: false, isExtractable: true),
            to: 1)
        guard case .keyPair(_, let privateKey) = try onOne.get().body else { return XCTFail("\(onOne)") }
        XCTAssertEqual(privateKey & 0xF, 1)
        let digest = try Digest.hash([1, 2, 3], algorithm: .sha256, context: crypto)
        for _ in 0..<4 {
            let signed = client.perform(
                .sign(key: privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), key: privateKey)
            XCTAssertEqual(signed.node?.id, 1)
            guard case .bytes(let signature) = try signed.get() else { return XCTFail("\(signed)") }
            XCTAssertEqual(signature.count, 256)
        }

        // A handle no node knows: every node says so, and that is the answer.
        let unknown = client.perform(.getAttributes(0x37), key: 0x37)
        XCTAssertEqual(unknown.code, .invalidHandle)
        XCTAssertEqual(Set(unknown.attempts.map(\.nodeID)), [0, 1])

        // Node 1 stops: it is taken out, and the answer comes from node 0.
        nodes[1].stop()
        let failedOver = client.perform(.getAttributes(privateKey), key: privateKey)
        XCTAssertEqual(Set(failedOver.attempts.map(\.nodeID)), [0, 1])
        XCTAssertEqual(failedOver.code, .invalidHandle)
        XCTAssertEqual(client.statistics().map(\.isDown), [false, true])
        // Deleting is not idempotent; node 1 is down, so only node 0 is asked.
        let delete = client.perform(.deleteKey(privateKey), key: privateKey)
        XCTAssertEqual(delete.attempts.map(\.nodeID), [0])

        // Broadcasts still ask every node for its own answer.
        let all = client.broadcast(.findKeys(KeyFilter()))
        XCTAssertEqual(all.map(\.code), [.success, .nodeUnreachable])
    }

    func testHomeNodeSkipsADeadFirstNode() throws {
        var lines = [
            "cluster_id = test-cluster", "trust_anchor = \(try Self.pki.get().caPath)", "node = 3 127.0.0.1:1",
        ]
        lines.append("node = 1 127.0.0.1:\(nodes[1].port)")
        let client = try ClusterClient(
            configuration: try ClusterConfiguration(text: lines.joined(separator: "\n"), baseDirectory: "."),
            cryptoContext: crypto)
        // The login finds node 3 refusing; it is down, and creation does not try it.
        XCTAssertEqual(
            client.login(role: .cryptoUser, user: "cu", password: "pw").map(\.code), [.nodeUnreachable, .success])
        let created = client.create(
            .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "k", isSession: true, isExtractable: true))
        XCTAssertEqual(created.attempts.map(\.nodeID), [1])
        XCTAssertEqual(created.attempts.map(\.code), [.success])
        XCTAssertEqual(client.homeNode()?.id, 1)
    }

    func testReconnectLogsInAgain() throws {
        let client = try makeClient()
        _ = client.login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertEqual(nodes[0].withState { $0.loginCount }, 1)
        nodes[0].dropConnections()
        // The idle connection is stale; an idempotent request is retried on a new one,
        // which logs in again with the saved credentials.
        let result = client.send(.findKeys(KeyFilter()), to: 0)
        XCTAssertNoThrow(try result.get(), "\(result)")
        XCTAssertEqual(nodes[0].withState { $0.connectionCount }, 2)
        XCTAssertEqual(nodes[0].withState { $0.loginCount }, 2)
    }

    func testCredentialsWithoutLoginLogInOnFirstUse() throws {
        let client = try makeClient()
        client.useCredentials(Credentials(user: "cu", password: "pw"))
        XCTAssertEqual(nodes[0].withState { $0.connectionCount }, 0, "nothing is opened before first use")
        XCTAssertNoThrow(try client.send(.findKeys(KeyFilter()), to: 0).get())
        XCTAssertEqual(nodes[0].withState { $0.loginCount }, 1)
        XCTAssertEqual(nodes[1].withState { $0.connectionCount }, 0)

        client.useCredentials(Credentials(user: "cu", password: "wrong"))
        let other = client.send(.findKeys(KeyFilter()), to: 1)
        XCTAssertEqual(code(other), .loginFailed)
    }

    func testLoginAsksEveryNodeAtOnce() throws {
        let barrier = LoginBarrier(parties: 2)
        for node in nodes { node.withState { $0.loginBarrier = barrier } }
        let client = try makeClient()
        XCTAssertEqual(client.login(role: .cryptoUser, user: "cu", password: "pw").map(\.code), [.success, .success])
    }

    func testLoginAgainAfterTheNodeClosedTheConnection() throws {
        let client = try makeClient()
        _ = client.login(role: .cryptoUser, user: "cu", password: "nope")
        nodes[0].dropConnections()
        let results = client.login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertEqual(results.map(\.code), [.success, .success], "\(results.map(\.statusLine))")
        XCTAssertEqual(nodes[0].withState { $0.connectionCount }, 2)
    }

    func testNodeNotLoggedInAnswersItsOwnCode() throws {
        let client = try makeClient()
        let result = client.send(.findKeys(KeyFilter()), to: 1)
        XCTAssertEqual(code(result), .notLoggedIn)
        XCTAssertNoThrow(try client.send(.nodeInfo, to: 1).get())
        let missing = client.send(.nodeInfo, to: 9)
        XCTAssertEqual(code(missing), .noNodeAvailable)
    }

    func testUntrustedNodeIsATLSFailure() throws {
        let other = try TestPKI()
        let text = "cluster_id = c\ntrust_anchor = \(other.caPath)\nnode = 0 127.0.0.1:\(nodes[0].port)"
        let client = try ClusterClient(
            configuration: try ClusterConfiguration(text: text, baseDirectory: "."), cryptoContext: crypto)
        let results = client.login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertEqual(results.map(\.code), [.tlsFailure])
    }

    /// The child of a fork must not write on the parent's connection: it opens its own and
    /// logs in again, and the parent's connection keeps working.
    func testForkedChildOpensItsOwnConnection() throws {
        let client = try makeClient()
        _ = client.login(role: .cryptoUser, user: "cu", password: "pw")
        XCTAssertNoThrow(try client.send(.generateRandom(count: 8), to: 0).get())
        XCTAssertEqual(nodes[0].withState { $0.connectionCount }, 1)

        let pid = fork()
        if pid == 0 {
            // Only the client runs here: no XCTest, no Foundation.
            var ok = true
            for _ in 0..<3 {
                if case .failure = client.send(.generateRandom(count: 8), to: 0) { ok = false }
            }
            _exit(ok ? 0 : 1)
        }
        XCTAssertGreaterThan(pid, 0)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        XCTAssertEqual(status, 0, "the child's requests failed")
        XCTAssertEqual(nodes[0].withState { $0.connectionCount }, 2, "the child opened its own connection")
        XCTAssertEqual(nodes[0].withState { $0.loginCount }, 2, "and logged in on it")
        // The parent's stream is intact.
        for _ in 0..<3 { XCTAssertNoThrow(try client.send(.generateRandom(count: 8), to: 0).get()) }
        XCTAssertEqual(nodes[0].withState { $0.connectionCount }, 2)
    }
}

func code(_ result: Result<HSMResponse, HSMError>) -> HSMReturnCode {
    switch result {
    case .success(let response): return response.code
    case .failure(let error): return error.code
    }
}
