// The node's metrics bookkeeping without a network: what the request path counts (by kind
// and outcome, logins, lockouts, throttled answers), the scrape-time gauges, the
// replication lag, and the metrics listener's request rules.

import CloudHSMCore
import Foundation
import OpenSSLKit
import Synchronization
import XCTest

@testable import HSMNode

/// The samples of an exposition, by series (`name{labels}`), HELP and TYPE lines left out.
func samples(_ metrics: NodeMetrics) -> [String: Double] {
    var values: [String: Double] = [:]
    for line in String(decoding: metrics.exposition(), as: UTF8.self).split(separator: "\n")
    where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
            XCTFail("unparsable sample line: \(line)")
            continue
        }
        values[String(line[..<space])] = value
    }
    return values
}

func operations(_ kind: String, _ outcome: String) -> String {
    "hsmd_private_key_operations_total{operation=\"\(kind)\",outcome=\"\(outcome)\"}"
}

final class NodeMetricsTests: XCTestCase {
    func testEveryCounterStartsAtZero() {
        let values = samples(NodeMetrics())
        for kind in ["rsa_sign", "rsa_decrypt", "ecdsa_sign"] {
            XCTAssertEqual(values[operations(kind, "success")], 0)
            XCTAssertEqual(values[operations(kind, "failure")], 0)
            XCTAssertEqual(values["hsmd_private_key_operation_duration_seconds_count{operation=\"\(kind)\"}"], 0)
        }
        for outcome in ["success", "failure", "locked"] {
            XCTAssertEqual(values["hsmd_logins_total{outcome=\"\(outcome)\"}"], 0)
        }
        for reason in ["crypto_queue", "connection_limit"] {
            XCTAssertEqual(values["hsmd_throttled_responses_total{reason=\"\(reason)\"}"], 0)
        }
        for name in [
            "hsmd_user_lockouts_total", "hsmd_connections_accepted_total",
            "hsmd_connections_refused_total{when=\"accept\"}", "hsmd_connections_refused_total{when=\"login\"}",
            "hsmd_connections_evicted_total", "hsmd_tls_handshake_failures_total",
        ] {
            XCTAssertEqual(values[name], 0, name)
        }
    }

    func testOperationsAreCountedByKindAndOutcome() throws {
        let node = try TestNode()
        let handler = node.handler
        var session = node.userSession("alice")
        guard
            let rsa = handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "r", isSession: true, isExtractable: false),
                &session
            ).pair,
            let ec = handler.ok(
                .generateECKeyPair(curve: .p256, label: "e", isSession: true, isExtractable: false), &session
            ).pair
        else { return XCTFail("no key pairs") }
        let digest = [UInt8](repeating: 7, count: 32)
        for _ in 0..<3 {
            _ = handler.ok(.sign(key: rsa.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), &session)
        }
        _ = handler.ok(.sign(key: ec.privateKey, mechanism: .ecdsa(digest: .sha256), data: digest), &session)
        // A digest of the wrong length, an EC key asked for RSA, a decryption of garbage.
        XCTAssertEqual(
            handler.code(.sign(key: rsa.privateKey, mechanism: .pkcs1(digest: .sha256), data: [1, 2]), &session),
            .invalidArgument)
        XCTAssertNotEqual(
            handler.code(.sign(key: ec.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), &session),
            .success)
        XCTAssertNotEqual(
            handler.code(
                .decrypt(key: rsa.privateKey, mechanism: .pkcs1, data: [UInt8](repeating: 1, count: 256)), &session),
            .success)
        var anonymous = handler.openSession()
        XCTAssertEqual(
            handler.code(.sign(key: rsa.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), &anonymous),
            .notLoggedIn)

        let values = samples(node.state.metrics)
        XCTAssertEqual(values[operations("rsa_sign", "success")], 3)
        XCTAssertEqual(values[operations("rsa_sign", "failure")], 3)
        XCTAssertEqual(values[operations("ecdsa_sign", "success")], 1)
        XCTAssertEqual(values[operations("ecdsa_sign", "failure")], 0)
        XCTAssertEqual(values[operations("rsa_decrypt", "success")], 0)
        XCTAssertEqual(values[operations("rsa_decrypt", "failure")], 1)
        // The histogram holds the successes only, and they took some time.
        XCTAssertEqual(values["hsmd_private_key_operation_duration_seconds_count{operation=\"rsa_sign\"}"], 3)
        XCTAssertEqual(
            values["hsmd_private_key_operation_duration_seconds_bucket{operation=\"rsa_sign\",le=\"+Inf\"}"], 3)
        XCTAssertGreaterThan(values["hsmd_private_key_operation_duration_seconds_sum{operation=\"rsa_sign\"}"] ?? 0, 0)
        XCTAssertEqual(values["hsmd_private_key_operation_duration_seconds_count{operation=\"ecdsa_sign\"}"], 1)
        // Session keys of the logged-in session, and the officer and alice.
        XCTAssertEqual(values["hsmd_keys{kind=\"session\"}"], 4)
        XCTAssertEqual(values["hsmd_keys{kind=\"token\"}"], 0)
        XCTAssertEqual(values["hsmd_users"], 2)
    }

    func testLoginsLockoutsAndLockedUsers() throws {
        let node = try TestNode()
        let handler = node.handler
        _ = node.userSession("bob", password: "right")
        var session = handler.openSession()
        for attempt in 0..<5 {
            XCTAssertEqual(
                handler.code(.login(role: .cryptoUser, user: "bob", password: "wrong-\(attempt)"), &session),
                .loginFailed)
        }
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "bob", password: "right"), &session), .userLocked)
        let values = samples(node.state.metrics)
        XCTAssertEqual(values["hsmd_logins_total{outcome=\"failure\"}"], 5)
        XCTAssertEqual(values["hsmd_logins_total{outcome=\"locked\"}"], 1)
        // userSession logged in the officer and bob once each.
        XCTAssertEqual(values["hsmd_logins_total{outcome=\"success\"}"], 2)
        XCTAssertEqual(values["hsmd_user_lockouts_total"], 1)
        XCTAssertEqual(values["hsmd_users_locked"], 1)
    }

    func testThrottledAnswersAreCounted() throws {
        let pool = CryptoCapacity(workers: 1, queueLimit: 0, operationsPerSecond: nil)
        let node = try TestNode(executor: pool)
        pool.report(to: node.state.metrics)
        let handler = node.handler
        var session = node.userSession("carol")
        guard
            let rsa = handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "r", isSession: false, isExtractable: false),
                &session
            ).pair
        else { return XCTFail("no key pair") }
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let holder = Thread {
            _ = try? pool.run {
                entered.signal()
                release.wait()
            }
        }
        holder.start()
        entered.wait()
        let digest = [UInt8](repeating: 7, count: 32)
        XCTAssertEqual(
            handler.code(.sign(key: rsa.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), &session),
            .throttled)
        let busy = samples(node.state.metrics)
        release.signal()
        XCTAssertEqual(busy["hsmd_throttled_responses_total{reason=\"crypto_queue\"}"], 1)
        XCTAssertEqual(busy[operations("rsa_sign", "failure")], 1)
        XCTAssertEqual(busy["hsmd_crypto_operations_running"], 1)
        XCTAssertEqual(busy["hsmd_crypto_slots"], 1)
        XCTAssertEqual(busy["hsmd_crypto_queue_max"], 0)
        XCTAssertEqual(busy["hsmd_keys{kind=\"token\"}"], 2)
    }

    func testReplicationLagCountsFromTheStartOfTheLastSync() {
        let clock = Mutex<Double>(1000)
        let metrics = NodeMetrics(now: { clock.withLock { $0 } })
        metrics.registerPeers([1, 2])
        clock.withLock { $0 = 1030 }
        var values = samples(metrics)
        // Never synced: as old as the node.
        XCTAssertEqual(values["hsmd_replication_lag_seconds{peer=\"1\"}"], 30)
        XCTAssertEqual(values["hsmd_replication_last_sync_timestamp_seconds{peer=\"2\"}"], 0)
        XCTAssertEqual(values["hsmd_replication_peer_up{peer=\"1\"}"], 0)
        XCTAssertEqual(values["hsmd_replication_syncs_total{peer=\"2\"}"], 0)

        metrics.recordSync(peer: 1, startedAt: 1025, pulled: 3)
        metrics.recordSyncFailure(peer: 2)
        metrics.recordPushFailure(peer: 2)
        clock.withLock { $0 = 1040 }
        values = samples(metrics)
        XCTAssertEqual(values["hsmd_replication_lag_seconds{peer=\"1\"}"], 15)
        XCTAssertEqual(values["hsmd_replication_last_sync_timestamp_seconds{peer=\"1\"}"], 1025)
        XCTAssertEqual(values["hsmd_replication_peer_up{peer=\"1\"}"], 1)
        XCTAssertEqual(values["hsmd_replication_syncs_total{peer=\"1\"}"], 1)
        XCTAssertEqual(values["hsmd_replication_records_pulled_total{peer=\"1\"}"], 3)
        XCTAssertEqual(values["hsmd_replication_lag_seconds{peer=\"2\"}"], 40)
        XCTAssertEqual(values["hsmd_replication_peer_up{peer=\"2\"}"], 0)
        XCTAssertEqual(values["hsmd_replication_sync_failures_total{peer=\"2\"}"], 1)
        XCTAssertEqual(values["hsmd_replication_push_failures_total{peer=\"2\"}"], 1)

        // A failed sync after a good one: down, and the lag keeps growing from the good one.
        metrics.recordSyncFailure(peer: 1)
        clock.withLock { $0 = 1100 }
        values = samples(metrics)
        XCTAssertEqual(values["hsmd_replication_peer_up{peer=\"1\"}"], 0)
        XCTAssertEqual(values["hsmd_replication_lag_seconds{peer=\"1\"}"], 75)
    }

    // MARK: The listener's request rules

    func testMetricsRequestRules() {
        func examine(_ text: String, limit: Int = 8192) -> MetricsRequest.Verdict? {
            MetricsRequest.examine(Array(text.utf8), limit: limit)
        }
        XCTAssertEqual(examine("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), .metrics(isHead: false))
        XCTAssertEqual(examine("HEAD /metrics HTTP/1.0\r\n\r\n"), .metrics(isHead: true))
        XCTAssertEqual(examine("GET /metrics?name[]=x HTTP/1.1\n\n"), .metrics(isHead: false))
        // Incomplete: wait for more, unless the request line already decides.
        XCTAssertNil(examine("GET /metrics HTTP/1.1\r\nHost: x\r\n"))
        XCTAssertNil(examine("GET /metr"))
        XCTAssertEqual(examine("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n"), .failed(.methodNotAllowed))
        XCTAssertEqual(examine("GET / HTTP/1.1\r\n\r\n"), .failed(.notFound))
        XCTAssertEqual(examine("GET /metrics/x HTTP/1.1\r\n\r\n"), .failed(.notFound))
        XCTAssertEqual(examine("GET /metrics HTTP/2.0\r\n\r\n"), .failed(.versionNotSupported))
        XCTAssertEqual(examine("GET /metrics\r\n\r\n"), .failed(.badRequest))
        XCTAssertEqual(examine("GET  /metrics HTTP/1.1\r\n\r\n"), .failed(.badRequest))
        XCTAssertEqual(examine("GET /m\u{7f}etrics HTTP/1.1\r\n\r\n"), .failed(.badRequest))
        XCTAssertEqual(examine("\u{16}\u{03}\u{01}\r\n\r\n"), .failed(.badRequest))
        // A head that does not end within the limit.
        XCTAssertEqual(
            examine("GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 100), limit: 64),
            .failed(.headTooLarge))
        XCTAssertEqual(examine(String(repeating: "G", count: 64), limit: 64), .failed(.headTooLarge))
    }

    func testErrorAnswersSayWhatWasWrong() {
        let text = String(decoding: HTTPResponse(status: .methodNotAllowed).bytes(includingBody: true), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"), text)
        XCTAssertTrue(text.contains("\r\nAllow: GET, HEAD\r\n"), text)
        XCTAssertTrue(text.contains("\r\nConnection: close\r\n"), text)
        XCTAssertTrue(text.hasSuffix("\r\n\r\nonly GET and HEAD are served\n"), text)
        let head = String(
            decoding: HTTPResponse(status: .ok, body: [65, 66]).bytes(includingBody: false), as: UTF8.self)
        XCTAssertTrue(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), head)
        XCTAssertTrue(head.contains("Content-Length: 2\r\n"), head)
        XCTAssertTrue(head.hasSuffix("\r\n\r\n"), head)
    }
}
