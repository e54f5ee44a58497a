// Seeds for the `config` fuzz target (Fuzz/Targets/config.swift): the texts of
// ClusterConfigurationTests, good and bad, and what the target found. `make fuzz-seeds` runs this with FUZZ_SEED_DIR
// set, which writes them to FUZZ_SEED_DIR/config/.

import Foundation
import XCTest

@testable import HSMClient

final class ConfigFuzzSeedTests: XCTestCase {
    static let texts = [
        """
        # comments and blank lines are ignored; relative paths are relative to this file
        cluster_id = local-dev
        trust_anchor = customerCA.crt

        node = 0 127.0.0.1:22230
        node = 1 127.0.0.1:22231
        node = 2 localhost:22232
        connect_timeout_ms = 3000
        operation_timeout_ms = 15000
        """,
        """
        cluster_id=c1
        trust_anchor=/abs/ca.pem\r
        \tnode =  7   [::1]:9000
        client_certificate = certs/client.crt
        client_key = certs/client.key
        max_connections_per_node = 4
        """,
        "cluster_id = a\ntrust_anchor = ca\nnode = 0 h:1\ncolour = blue",
        "cluster_id = a\njust some words",
        "cluster_id = a\ncluster_id = b",
        "node = 16 h:1",
        "node = 0 h:70000",
        "node = 0 ::1:22",
        "node = 0 h:1 extra",
        "node = 0 h:1\nnode = 0 h:2",
        "connect_timeout_ms = soon",
        "operation_timeout_ms = -5",
        "trust_anchor =",
        "cluster_id = a\ntrust_anchor = ca\nnode = 0 h:1\nclient_key = k",
    ]

    func testSeedsParseAndAreWrittenOnRequest() throws {
        let parsed = (Self.texts + ClusterConfigurationFuzzTests.findings).filter {
            (try? ClusterConfiguration(text: $0, baseDirectory: "/etc/cloudhsm")) != nil
        }
        XCTAssertEqual(parsed.count, 2, "the two good configurations parse, every other text is refused")
        guard let root = ProcessInfo.processInfo.environment["FUZZ_SEED_DIR"], !root.isEmpty else { return }
        let directory = URL(fileURLWithPath: root).appendingPathComponent("config")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for text in Self.texts + ClusterConfigurationFuzzTests.findings {
            let name = String(
                text.utf8.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }, radix: 16)
            try Data(text.utf8).write(to: directory.appendingPathComponent(name))
        }
    }
}
