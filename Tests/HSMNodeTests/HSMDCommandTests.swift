// hsmd's command line: the documented flags parse, mistakes are named.

import XCTest

@testable import HSMNode

final class HSMDCommandTests: XCTestCase {
    func testInitAndRunParse() throws {
        XCTAssertEqual(
            try HSMDCommand.parse([
                "init", "--data-dir", "/d", "--node-id", "2", "--cluster-id", "c", "--co-password", "pw",
            ]),
            .initialize(
                .init(
                    dataDirectory: "/d", nodeID: 2, clusterID: "c", coPassword: .argument("pw"),
                    passwordIterations: 100_000)))
        let fromFile = ["init", "--data-dir", "/d", "--node-id", "2", "--cluster-id", "c", "--co-password-file"]
        guard case .initialize(let options) = try HSMDCommand.parse(fromFile + ["/run/pw"]) else {
            return XCTFail("not init")
        }
        XCTAssertEqual(options.coPassword, .file("/run/pw"))
        guard case .initialize(let piped) = try HSMDCommand.parse(fromFile + ["-"]) else { return XCTFail("not init") }
        XCTAssertEqual(piped.coPassword, .standardInput)
        let run = try HSMDCommand.parse([
            "run", "--data-dir", "/d", "--listen", "[::1]:0", "--cert", "c", "--key", "k", "--ca", "a", "--workers",
            "3",
            "--queue", "0", "--max-ops-per-second", "2.5", "--password-iterations", "10",
        ])
        guard case .run(let options) = run else { return XCTFail("not run") }
        XCTAssertEqual(options.host, "::1")
        XCTAssertEqual(options.port, 0)
        XCTAssertEqual(options.workers, 3)
        XCTAssertEqual(options.queueLimit, 0)
        XCTAssertEqual(options.maxOperationsPerSecond, 2.5)
        XCTAssertEqual(options.passwordIterations, 10)
        XCTAssertEqual(try HSMDCommand.parse(["--help"]), .help)
    }

    func testConnectionFlagsParse() throws {
        let base = ["run", "--data-dir", "/d", "--listen", "h:1", "--cert", "c", "--key", "k", "--ca", "a"]
        guard case .run(let defaults) = try HSMDCommand.parse(base) else { return XCTFail("not run") }
        XCTAssertEqual(defaults.connectionLimits, ConnectionLimits())
        XCTAssertNil(defaults.logFile)
        let run = try HSMDCommand.parse(
            base + [
                "--log-file", "/var/log/hsmd.log", "--handshake-timeout-ms", "1500", "--frame-timeout-ms", "2500",
                "--login-timeout-ms", "3500", "--idle-timeout-ms", "60000", "--max-connections", "100",
                "--max-unauthenticated", "20", "--max-unauthenticated-per-source", "5",
            ])
        guard case .run(let options) = run else { return XCTFail("not run") }
        XCTAssertEqual(options.logFile, "/var/log/hsmd.log")
        let limits = options.connectionLimits
        XCTAssertEqual(limits.handshakeTimeoutMilliseconds, 1500)
        XCTAssertEqual(limits.frameTimeoutMilliseconds, 2500)
        XCTAssertEqual(limits.loginTimeoutMilliseconds, 3500)
        XCTAssertEqual(limits.idleTimeoutMilliseconds, 60000)
        XCTAssertEqual(limits.maxConnections, 100)
        XCTAssertEqual(limits.maxUnauthenticated, 20)
        XCTAssertEqual(limits.maxUnauthenticatedPerSource, 5)
        XCTAssertEqual(limits.maxAuthenticated, 80)

        func message(_ extra: [String]) -> String {
            do {
                _ = try HSMDCommand.parse(base + extra)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(message(["--max-unauthenticated", "1024"]).contains("must be below --max-connections"))
        XCTAssertTrue(
            message(["--max-unauthenticated", "8", "--max-unauthenticated-per-source", "9"]).contains("must not exceed")
        )
        XCTAssertTrue(message(["--frame-timeout-ms", "5"]).contains("--frame-timeout-ms"))
        XCTAssertTrue(message(["--log-file", ""]).contains("--log-file is empty"))
    }

    func testMistakesAreNamed() {
        func message(_ arguments: [String]) -> String {
            do {
                _ = try HSMDCommand.parse(arguments)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(message([]).contains("missing command"))
        XCTAssertTrue(message(["serve"]).contains("unknown command"))
        XCTAssertTrue(
            message(["init", "--data-dir", "/d", "--node-id", "16", "--cluster-id", "c", "--co-password", "p"])
                .contains("--node-id"))
        XCTAssertTrue(
            message(["init", "--data-dir", "/d", "--node-id", "1", "--cluster-id", "c"]).contains("--co-password-file"))
        XCTAssertTrue(
            message([
                "init", "--data-dir", "/d", "--node-id", "1", "--cluster-id", "c", "--co-password", "p",
                "--co-password-file", "f",
            ]).contains("not both"))
        XCTAssertTrue(
            message(["run", "--data-dir", "/d", "--listen", "nohost", "--cert", "c", "--key", "k", "--ca", "a"])
                .contains("HOST:PORT"))
        XCTAssertTrue(
            message([
                "run", "--data-dir", "/d", "--listen", "h:1", "--cert", "c", "--key", "k", "--ca", "a", "--bogus", "1",
            ]).contains("--bogus"))
        XCTAssertTrue(
            message([
                "run", "--data-dir", "/d", "--listen", "h:1", "--cert", "c", "--key", "k", "--ca", "a", "--workers",
                "x",
            ]).contains("--workers"))
        XCTAssertTrue(message(["run", "--data-dir"]).contains("needs a value"))
    }

    func testMetricsListenParses() throws {
        let base = ["run", "--data-dir", "/d", "--listen", "127.0.0.1:2223", "--cert", "c", "--key", "k", "--ca", "a"]
        guard case .run(let off) = try HSMDCommand.parse(base) else { return XCTFail("not run") }
        XCTAssertNil(off.metricsListen, "metrics are off unless asked for")
        guard case .run(let on) = try HSMDCommand.parse(base + ["--metrics-listen", "[::1]:0"]) else {
            return XCTFail("not run")
        }
        XCTAssertEqual(on.metricsListen, .init(host: "::1", port: 0))
        XCTAssertEqual(on.metricsListen?.url(port: 9100), "http://[::1]:9100")
        guard case .run(let v4) = try HSMDCommand.parse(base + ["--metrics-listen", "10.0.0.5:9100"]) else {
            return XCTFail("not run")
        }
        XCTAssertEqual(v4.metricsListen?.url(port: 9100), "http://10.0.0.5:9100")
        func message(_ extra: [String]) -> String {
            do {
                _ = try HSMDCommand.parse(base + extra)
                return ""
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(message(["--metrics-listen", "9100"]).contains("--metrics-listen needs HOST:PORT"))
        XCTAssertTrue(message(["--metrics-listen", "h:99999"]).contains("--metrics-listen needs HOST:PORT"))
        XCTAssertTrue(message(["--metrics-listen", "127.0.0.1:2223"]).contains("port of its own"))
        XCTAssertTrue(message(["--metrics-listen", "h:1", "--metrics-listen", "h:2"]).contains("given twice"))
    }
}
