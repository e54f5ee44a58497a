// The `hsmd` command line: parsing into typed commands (testable without a process) and
// running them. docs/architecture.md is the contract for these flags.

import Foundation
import OpenSSLKit

public struct UsageError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
    init(_ message: String) { self.message = message }
}

public enum HSMDCommand: Equatable {
    case help
    case initialize(InitOptions)
    case run(RunOptions)

    public struct InitOptions: Equatable {
        public var dataDirectory: String
        public var nodeID: UInt8
        public var clusterID: String
        public var coPassword: PasswordSource
        public var passwordIterations: Int
    }

    /// Where `hsmd init` takes the crypto officer's password from.
    public enum PasswordSource: Equatable {
        /// `--co-password PW`: visible to every user of the machine (ps, /proc) while
        /// init runs; kept for compatibility.
        case argument(String)
        /// `--co-password-file FILE`: the file's only line; the file must be mode 0600.
        case file(String)
        /// `--co-password-file -`: standard input (typed without echo on a terminal).
        case standardInput

        /// Reads the password where it is. Files are checked like every secret file.
        public func read() throws -> String {
            switch self {
            case .argument(let password): return password
            case .file(let path): return try SecretFile.readPassword(path, what: "the CO password")
            case .standardInput: return try SecretFile.readPassword("-", what: "the CO password")
            }
        }
    }

    public struct RunOptions: Equatable {
        public var dataDirectory: String
        public var host: String
        public var port: UInt16
        public var certificatePath: String
        public var keyPath: String
        public var caPath: String
        public var workers: Int
        public var queueLimit: Int
        public var maxOperationsPerSecond: Double?
        public var passwordIterations: Int?
        /// The other nodes of the cluster; empty for a node on its own.
        public var peers: [PeerAddress] = []
        public var clusterKeyPath: String? = nil
        /// Nodes (this one included) that must hold a new token key before it is reported.
        public var minNodes: Int = 1
        public var syncIntervalMilliseconds: Int = 2000
        public var peerTimeoutMilliseconds: Int = 1500
        /// Deadlines and connection slots against clients that never log in.
        public var connectionLimits = ConnectionLimits()
        /// Where the log (stderr) goes; nil keeps stderr.
        public var logFile: String? = nil
        /// Where Prometheus metrics are served over HTTP; nil: nowhere.
        public var metricsListen: ListenAddress? = nil
    }

    /// `HOST:PORT` of a listener.
    public struct ListenAddress: Equatable {
        public var host: String
        public var port: UInt16

        /// `http://HOST:PORT` with `port` (the bound one), brackets around an IPv6 host.
        public func url(port: UInt16) -> String {
            "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
        }
    }

    public static let usage = """
        usage:
          hsmd init --data-dir DIR --node-id N --cluster-id ID --co-password-file FILE
                    [--password-iterations N]
              Creates DIR (0700), the SQLite store, the 32-byte master key (DIR/master.key,
              0600) and the crypto officer "admin" with the password in FILE (its only
              line; mode 0600, like every secret file; FILE - reads standard input).
              Refuses an already initialised DIR. N is 0...15.
              --co-password PW      instead of --co-password-file: works, but every user of
                                    the machine can read PW (ps, /proc) while init runs
          hsmd run --data-dir DIR --listen HOST:PORT --cert FILE --key FILE --ca FILE
                   [--workers N] [--queue N] [--max-ops-per-second N] [--password-iterations N]
                   [--peer N=HOST:PORT ...] [--cluster-key FILE] [--min-nodes N]
                   [--sync-interval-ms N] [--peer-timeout-ms N] [--log-file FILE]
                   [--handshake-timeout-ms N] [--frame-timeout-ms N] [--login-timeout-ms N]
                   [--idle-timeout-ms N] [--max-connections N] [--max-unauthenticated N]
                   [--max-unauthenticated-per-source N] [--metrics-listen HOST:PORT]
              Serves TLS 1.3 on HOST:PORT (PORT 0 picks one) and prints
              "hsmd node N listening on HOST:PORT" once it accepts connections.
              --workers             RSA operations that may run at once (default: number of CPUs)
              --queue               requests that may wait for a free slot; beyond that the
                                    node answers 0xbb throttled (default 64)
              --max-ops-per-second  pace the operations to emulate fixed HSM capacity
                                    (default: unlimited)
              --peer N=HOST:PORT    another node of the cluster (repeat for each); token keys
                                    and users replicate to and from every peer over mutual
                                    TLS (this node's --cert/--key; a peer's certificate must
                                    come from --ca with CN hsm-node-N)
              --cluster-key FILE    the cluster-wide 32-byte key (raw, or 64 hex digits; mode
                                    0600) sealing every peer message; required with --peer
              --min-nodes N         nodes, this one included, that must hold a new token key
                                    before it is reported created, else 0xbd (default 2, or 1
                                    without peers)
              --sync-interval-ms N  how often to pull what peers hold and this node lacks
                                    (default 2000)
              --peer-timeout-ms N   connect timeout towards a peer (default 1500)
              --log-file FILE       log there instead of stderr (append; created 0640; the
                                    process's stderr goes there too); SIGHUP reopens it
              --handshake-timeout-ms N  the TLS handshake must complete within N ms of
                                    the accept (default 5000)
              --frame-timeout-ms N  a request must arrive whole within N ms of its first
                                    byte (default 5000)
              --login-timeout-ms N  a connection not logged in N ms after its handshake is
                                    closed (default 10000; peer nodes need no login)
              --idle-timeout-ms N   a logged-in connection silent this long is closed
                                    (default 600000)
              --max-connections N   connections at once (default 1024)
              --max-unauthenticated N  of those, connections not logged in (default 64);
                                    when full, the one waiting longest makes room
              --max-unauthenticated-per-source N  the same per client address (IPv6: per
                                    /64) (default 16)
              --metrics-listen HOST:PORT  serve Prometheus metrics over plain HTTP at
                                    http://HOST:PORT/metrics (PORT 0 picks one) and print
                                    "hsmd node N metrics on http://HOST:PORT/metrics"
                                    before the listening line (default: off). No TLS, no
                                    login: bind it to an address only monitoring reaches
          --password-iterations     PBKDF2-HMAC-SHA256 iterations for passwords set from
                                    then on (default 100000; init stores it for the node,
                                    run overrides it). Lower it only for tests.
          hsmd --help
        """

    /// Parses the arguments after the program name.
    public static func parse(_ arguments: [String]) throws -> HSMDCommand {
        guard let verb = arguments.first else { throw UsageError("missing command: init or run") }
        if ["-h", "--help", "help"].contains(verb) { return .help }
        var flags: [String: String] = [:]
        var peerFlags: [String] = []  // the one flag that may repeat
        var rest = arguments.dropFirst()
        while let flag = rest.popFirst() {
            if flag == "-h" || flag == "--help" { return .help }
            guard flag.hasPrefix("--") else { throw UsageError("unexpected argument '\(flag)'") }
            guard let value = rest.popFirst() else { throw UsageError("\(flag) needs a value") }
            if flag == "--peer", verb == "run" {
                peerFlags.append(value)
                continue
            }
            guard flags[flag] == nil else { throw UsageError("\(flag) is given twice") }
            flags[flag] = value
        }
        func take(_ name: String) throws -> String {
            guard let value = flags.removeValue(forKey: name) else { throw UsageError("missing \(name)") }
            guard !value.isEmpty else { throw UsageError("\(name) is empty") }
            return value
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let text = flags.removeValue(forKey: name) else { return nil }
            guard let value = Int(text), range.contains(value) else {
                throw UsageError(
                    "\(name) must be a whole number in \(range.lowerBound)...\(range.upperBound), not '\(text)'")
            }
            return value
        }
        let command: HSMDCommand
        switch verb {
        case "init":
            guard let nodeID = try integer("--node-id", 0...15) else { throw UsageError("missing --node-id") }
            let password: PasswordSource
            switch (flags["--co-password"], flags["--co-password-file"]) {
            case (.some, .some):
                throw UsageError("give --co-password-file or --co-password, not both")
            case (.some, nil):
                password = .argument(try take("--co-password"))
            case (nil, .some):
                let path = try take("--co-password-file")
                password = path == "-" ? .standardInput : .file(path)
            case (nil, nil):
                throw UsageError("missing --co-password-file (or --co-password)")
            }
            command = .initialize(
                InitOptions(
                    dataDirectory: try take("--data-dir"), nodeID: UInt8(nodeID), clusterID: try take("--cluster-id"),
                    coPassword: password,
                    passwordIterations: try integer("--password-iterations", 1...10_000_000)
                        ?? NodeState.defaultPasswordIterations))
        case "run":
            let (host, port) = try parseListen(try take("--listen"), flag: "--listen")
            var rate: Double? = nil
            if let text = flags.removeValue(forKey: "--max-ops-per-second") {
                guard let value = Double(text), value > 0, value.isFinite else {
                    throw UsageError("--max-ops-per-second must be a positive number, not '\(text)'")
                }
                rate = value
            }
            var options = RunOptions(
                dataDirectory: try take("--data-dir"), host: host, port: port, certificatePath: try take("--cert"),
                keyPath: try take("--key"), caPath: try take("--ca"),
                workers: try integer("--workers", 1...1024) ?? ProcessInfo.processInfo.activeProcessorCount,
                queueLimit: try integer("--queue", 0...1_000_000) ?? 64, maxOperationsPerSecond: rate,
                passwordIterations: try integer("--password-iterations", 1...10_000_000))
            options.peers = try peerFlags.map(parsePeer)
            guard Set(options.peers.map(\.id)).count == options.peers.count else {
                throw UsageError("--peer names the same node id twice")
            }
            if let path = flags.removeValue(forKey: "--cluster-key") {
                guard !path.isEmpty else { throw UsageError("--cluster-key is empty") }
                options.clusterKeyPath = path
            }
            if !options.peers.isEmpty, options.clusterKeyPath == nil {
                throw UsageError("--peer needs --cluster-key: peer messages are sealed under the cluster key")
            }
            options.minNodes = try integer("--min-nodes", 1...16) ?? min(2, options.peers.count + 1)
            guard options.minNodes <= options.peers.count + 1 else {
                throw UsageError(
                    "--min-nodes \(options.minNodes) needs at least \(options.minNodes - 1) --peer, "
                        + "found \(options.peers.count)")
            }
            options.syncIntervalMilliseconds = try integer("--sync-interval-ms", 50...3_600_000) ?? 2000
            options.peerTimeoutMilliseconds = try integer("--peer-timeout-ms", 50...60_000) ?? 1500
            if let path = flags.removeValue(forKey: "--log-file") {
                guard !path.isEmpty else { throw UsageError("--log-file is empty") }
                options.logFile = path
            }
            options.connectionLimits = try parseConnectionLimits(integer)
            if let text = flags.removeValue(forKey: "--metrics-listen") {
                let (host, port) = try parseListen(text, flag: "--metrics-listen")
                guard host != options.host || port != options.port || port == 0 else {
                    throw UsageError("--metrics-listen \(text) is the address of --listen; give it a port of its own")
                }
                options.metricsListen = ListenAddress(host: host, port: port)
            }
            command = .run(options)
        default:
            throw UsageError("unknown command '\(verb)': use init or run")
        }
        if let unknown = flags.keys.sorted().first { throw UsageError("unknown option \(unknown) for \(verb)") }
        return command
    }

    static func parseConnectionLimits(_ integer: (String, ClosedRange<Int>) throws -> Int?) throws
        -> ConnectionLimits
    {
        var limits = ConnectionLimits()
        func set(_ flag: String, _ range: ClosedRange<Int>, _ value: inout Int) throws {
            if let given = try integer(flag, range) { value = given }
        }
        try set("--handshake-timeout-ms", 100...600_000, &limits.handshakeTimeoutMilliseconds)
        try set("--frame-timeout-ms", 100...600_000, &limits.frameTimeoutMilliseconds)
        try set("--login-timeout-ms", 100...3_600_000, &limits.loginTimeoutMilliseconds)
        try set("--idle-timeout-ms", 1000...86_400_000, &limits.idleTimeoutMilliseconds)
        try set("--max-connections", 2...100_000, &limits.maxConnections)
        try set("--max-unauthenticated", 1...100_000, &limits.maxUnauthenticated)
        try set("--max-unauthenticated-per-source", 1...100_000, &limits.maxUnauthenticatedPerSource)
        guard limits.maxUnauthenticated < limits.maxConnections else {
            throw UsageError(
                "--max-unauthenticated (\(limits.maxUnauthenticated)) must be below --max-connections "
                    + "(\(limits.maxConnections)): logged-in clients need slots of their own")
        }
        guard limits.maxUnauthenticatedPerSource <= limits.maxUnauthenticated else {
            throw UsageError(
                "--max-unauthenticated-per-source (\(limits.maxUnauthenticatedPerSource)) must not exceed "
                    + "--max-unauthenticated (\(limits.maxUnauthenticated))")
        }
        return limits
    }

    /// `N=HOST:PORT`.
    static func parsePeer(_ text: String) throws -> PeerAddress {
        guard let equals = text.firstIndex(of: "="), let id = UInt8(text[..<equals]), id <= 15 else {
            throw UsageError("--peer needs N=HOST:PORT with a node id 0...15, not '\(text)'")
        }
        let (host, port) = try parseListen(String(text[text.index(after: equals)...]), flag: "--peer")
        guard port != 0 else { throw UsageError("--peer \(text): the port must not be 0") }
        return PeerAddress(id: id, host: host, port: port)
    }

    /// `HOST:PORT`, `[v6]:PORT`; `flag` names the option in errors.
    static func parseListen(_ text: String, flag: String) throws -> (String, UInt16) {
        guard let colon = text.lastIndex(of: ":") else { throw UsageError("\(flag) needs HOST:PORT, not '\(text)'") }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = UInt16(text[text.index(after: colon)...]) else {
            throw UsageError("\(flag) needs HOST:PORT with a port 0...65535, not '\(text)'")
        }
        return (host, port)
    }
}
