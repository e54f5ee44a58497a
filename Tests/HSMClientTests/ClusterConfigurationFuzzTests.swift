// What the `config` fuzz target (Fuzz/Targets/config.swift) checks, kept as unit tests:
// a parsed configuration, written back out, parses to the same configuration. The inputs
// that broke it are here; they are seeds of the target too (ConfigFuzzSeedTests).

import XCTest

@testable import HSMClient

final class ClusterConfigurationFuzzTests: XCTestCase {
    /// Node lines that parsed to a host holding a bracket, whose own description
    /// (`[x:1`) the parser then refused.
    static let findings = [
        "cluster_id = a\ntrust_anchor = ca\nnode = 0 [[x]:1",
        "cluster_id = a\ntrust_anchor = ca\nnode = 0 [x[]:1",
        "cluster_id = a\ntrust_anchor = ca\nnode = 0 x]:1",
    ]

    func testHostsWithBracketsAreRefusedWithTheirLine() {
        for text in Self.findings {
            XCTAssertThrowsError(try ClusterConfiguration(text: text, baseDirectory: ".", source: "f.cfg"), text) {
                guard let error = $0 as? ConfigurationError else { return XCTFail("\($0)") }
                XCTAssertEqual(error.line, 3, text)
                XCTAssertTrue(error.reason.hasPrefix("node 0 has an invalid host"), error.reason)
            }
        }
    }

    func testNodeDescriptionsParseBackToTheSameNode() throws {
        for address in ["127.0.0.1:1", "[::1]:9000", "[fe80::1%eth0]:2223", "hsm-1.example:65535", "[v4.name]:7"] {
            let text = "cluster_id = a\ntrust_anchor = /ca\nnode = 3 \(address)"
            let config = try ClusterConfiguration(text: text, baseDirectory: ".")
            let again = try ClusterConfiguration(
                text: "cluster_id = a\ntrust_anchor = /ca\nnode = 3 \(config.nodes[0])", baseDirectory: ".")
            XCTAssertEqual(again.nodes, config.nodes, address)
        }
    }
}
