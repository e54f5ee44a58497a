// Parsing of the client's cluster configuration: the documented format, relative paths,
// and a clear error (file and line) for everything malformed.

import Glibc
import XCTest

@testable import HSMClient

final class ClusterConfigurationTests: XCTestCase {
    private let example = """
        # comments and blank lines are ignored; relative paths are relative to this file
        cluster_id = local-dev
        trust_anchor = customerCA.crt

        node = 0 127.0.0.1:22230
        node = 1 127.0.0.1:22231
        node = 2 localhost:22232
        connect_timeout_ms = 3000
        operation_timeout_ms = 15000
        """

    func testDocumentedExampleParses() throws {
        let config = try ClusterConfiguration(text: example, baseDirectory: "/etc/cloudhsm", source: "cluster.cfg")
        XCTAssertEqual(config.clusterID, "local-dev")
        XCTAssertEqual(config.trustAnchorPath, "/etc/cloudhsm/customerCA.crt")
        XCTAssertEqual(
            config.nodes,
            [
                NodeAddress(id: 0, host: "127.0.0.1", port: 22230), NodeAddress(id: 1, host: "127.0.0.1", port: 22231),
                NodeAddress(id: 2, host: "localhost", port: 22232),
            ])
        XCTAssertEqual(config.connectTimeoutMilliseconds, 3000)
        XCTAssertEqual(config.operationTimeoutMilliseconds, 15000)
        XCTAssertNil(config.clientCertificatePath)
        XCTAssertEqual(config.node(id: 1)?.description, "127.0.0.1:22231")
    }

    func testDefaultsAbsolutePathsClientCertificateAndIPv6() throws {
        let text = """
            cluster_id=c1
            trust_anchor=/abs/ca.pem\r
            \tnode =  7   [::1]:9000
            client_certificate = certs/client.crt
            client_key = certs/client.key
            """
        let config = try ClusterConfiguration(text: text, baseDirectory: "conf")
        XCTAssertEqual(config.trustAnchorPath, "/abs/ca.pem")
        XCTAssertEqual(config.nodes, [NodeAddress(id: 7, host: "::1", port: 9000)])
        XCTAssertEqual(config.nodes[0].description, "[::1]:9000")
        XCTAssertEqual(config.clientCertificatePath, "conf/certs/client.crt")
        XCTAssertEqual(config.clientKeyPath, "conf/certs/client.key")
        XCTAssertEqual(config.connectTimeoutMilliseconds, ClusterConfiguration.defaultConnectTimeoutMilliseconds)
        XCTAssertEqual(config.operationTimeoutMilliseconds, ClusterConfiguration.defaultOperationTimeoutMilliseconds)
    }

    func testBadLinesNameSourceAndLine() {
        let cases: [(String, Int?, String)] = [
            ("cluster_id = a\ntrust_anchor = ca\nnode = 0 h:1\ncolour = blue", 4, "unknown setting `colour`"),
            ("cluster_id = a\njust some words", 2, "expected `key = value`"),
            ("cluster_id = a\ncluster_id = b", 2, "cluster_id is set more than once"),
            ("node = 16 h:1", 1, "node id must be a number from 0 to 15"),
            ("node = x h:1", 1, "node id must be a number"),
            ("node = 0 h", 1, "expected HOST:PORT"),
            ("node = 0 h:70000", 1, "invalid port"),
            ("node = 0 h:0", 1, "invalid port"),
            ("node = 0 :22", 1, "has no host"),
            ("node = 0 ::1:22", 1, "write IPv6 addresses as"),
            ("node = 0", 1, "expected `node = ID HOST:PORT`"),
            ("node = 0 h:1 extra", 1, "expected `node = ID HOST:PORT`"),
            ("node = 0 h:1\nnode = 0 h:2", 2, "listed more than once"),
            ("connect_timeout_ms = soon", 1, "connect_timeout_ms must be a number of milliseconds"),
            ("operation_timeout_ms = -5", 1, "operation_timeout_ms must be"),
            ("trust_anchor =", 1, "trust_anchor has no value"),
            ("trust_anchor = ca\nnode = 0 h:1", nil, "cluster_id is missing"),
            ("cluster_id = a\nnode = 0 h:1", nil, "trust_anchor is missing"),
            ("cluster_id = a\ntrust_anchor = ca", nil, "no `node = ID HOST:PORT` line"),
            ("cluster_id = a\ntrust_anchor = ca\nnode = 0 h:1\nclient_key = k", nil, "client_key is set without"),
        ]
        for (text, line, expected) in cases {
            XCTAssertThrowsError(try ClusterConfiguration(text: text, baseDirectory: ".", source: "test.cfg")) {
                error in
                guard let error = error as? ConfigurationError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.source, "test.cfg", text)
                XCTAssertEqual(error.line, line, text)
                XCTAssertTrue(error.reason.contains(expected), "\(text): \(error.reason)")
                XCTAssertTrue(error.description.hasPrefix("cluster configuration test.cfg"), error.description)
            }
        }
    }

    func testLoadFromFileResolvesRelativeToTheFile() throws {
        let directory = try temporaryDirectory()
        let path = directory + "/cluster.cfg"
        try write(example, to: path)
        let config = try ClusterConfiguration.load(path: path)
        XCTAssertEqual(config.trustAnchorPath, directory + "/customerCA.crt")
        XCTAssertEqual(config.source, path)

        setenv(ClusterConfiguration.environmentVariable, path, 1)
        defer { unsetenv(ClusterConfiguration.environmentVariable) }
        XCTAssertEqual(try ClusterConfiguration.load(), config)
    }

    func testMissingFileIsAClearError() {
        XCTAssertThrowsError(try ClusterConfiguration.load(path: "/nonexistent/cluster.cfg")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("/nonexistent/cluster.cfg"), text)
            XCTAssertTrue(text.contains("No such file or directory"), text)
        }
    }

    func testClientRefusesUnreadableTrustAnchor() throws {
        let config = try ClusterConfiguration(
            text: "cluster_id = a\ntrust_anchor = /nonexistent/ca.crt\nnode = 0 127.0.0.1:1", baseDirectory: ".")
        XCTAssertThrowsError(try ClusterClient(configuration: config)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("trust_anchor /nonexistent/ca.crt"), text)
        }
    }

    func testPathHelpers() {
        XCTAssertEqual(SystemFiles.directory(of: "cluster.cfg"), ".")
        XCTAssertEqual(SystemFiles.directory(of: "/cluster.cfg"), "/")
        XCTAssertEqual(SystemFiles.directory(of: "/etc/cloudhsm/cluster.cfg"), "/etc/cloudhsm")
        XCTAssertEqual(SystemFiles.resolve("ca.crt", relativeTo: "."), "ca.crt")
        XCTAssertEqual(SystemFiles.resolve("ca.crt", relativeTo: "/"), "/ca.crt")
        XCTAssertEqual(SystemFiles.resolve("/x/ca.crt", relativeTo: "/etc"), "/x/ca.crt")
    }
}

func temporaryDirectory() throws -> String {
    var template = Array("/tmp/hsmclient-test-XXXXXX".utf8CString)
    guard let result = mkdtemp(&template) else { throw POSIXErrorCode(rawValue: errno).map { POSIXError($0) }! }
    return String(cString: result)
}

func write(_ text: String, to path: String) throws {
    guard let file = fopen(path, "w") else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
    defer { fclose(file) }
    fputs(text, file)
}
