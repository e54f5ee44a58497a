// The client's view of the cluster: which nodes exist, how to trust them and how long to
// wait. Parsed from the file format in docs/architecture.md, either read from disk
// (`CLOUDHSM_CONFIG` or /etc/cloudhsm/cluster.cfg) or given inline by the provider.

/// One node of the cluster as the configuration names it.
public struct NodeAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// 0...15: the low four bits of every handle the node creates.
    public var id: Int
    public var host: String
    public var port: UInt16

    public init(id: Int, host: String, port: UInt16) {
        self.id = id
        self.host = host
        self.port = port
    }

    /// `127.0.0.1:22230`, or `[::1]:22230` for IPv6 literals.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

public struct ClusterConfiguration: Equatable, Sendable {
    public static let defaultPath = "/etc/cloudhsm/cluster.cfg"
    public static let environmentVariable = "CLOUDHSM_CONFIG"
    public static let defaultConnectTimeoutMilliseconds = 3000
    public static let defaultOperationTimeoutMilliseconds = 15000
    public static let defaultMaxConnectionsPerNode = 8

    public var clusterID: String
    /// Absolute, or relative to the working directory when the configuration was inline
    /// with a relative base directory.
    public var trustAnchorPath: String
    /// In the order the configuration lists them; ids are unique.
    public var nodes: [NodeAddress]
    public var connectTimeoutMilliseconds: Int
    public var operationTimeoutMilliseconds: Int
    /// The bound of each node's connection pool (`max_connections_per_node`).
    public var maxConnectionsPerNode: Int
    /// How long an idempotent request waits for one node before it moves to another.
    public var failover: FailoverPolicy
    public var clientCertificatePath: String?
    public var clientKeyPath: String?
    /// The file the configuration came from, or a name for an inline one; errors name it.
    public var source: String

    public init(
        clusterID: String, trustAnchorPath: String, nodes: [NodeAddress],
        connectTimeoutMilliseconds: Int = defaultConnectTimeoutMilliseconds,
        operationTimeoutMilliseconds: Int = defaultOperationTimeoutMilliseconds,
        clientCertificatePath: String? = nil, clientKeyPath: String? = nil, source: String = "<inline>",
        maxConnectionsPerNode: Int = defaultMaxConnectionsPerNode, failover: FailoverPolicy = FailoverPolicy()
    ) {
        self.clusterID = clusterID
        self.trustAnchorPath = trustAnchorPath
        self.nodes = nodes
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.operationTimeoutMilliseconds = operationTimeoutMilliseconds
        self.maxConnectionsPerNode = maxConnectionsPerNode
        self.failover = failover
        self.clientCertificatePath = clientCertificatePath
        self.clientKeyPath = clientKeyPath
        self.source = source
    }

    /// The node with `id`, if configured.
    public func node(id: Int) -> NodeAddress? { nodes.first { $0.id == id } }

    /// The file named by `CLOUDHSM_CONFIG`, else `/etc/cloudhsm/cluster.cfg`.
    public static var defaultFilePath: String {
        if let path = SystemFiles.environment(environmentVariable), !path.isEmpty { return path }
        return defaultPath
    }

    /// Loads the configuration from `CLOUDHSM_CONFIG` or the default path.
    ///
    /// - Throws: `ConfigurationError` naming the file (and line) that is wrong.
    public static func load() throws -> ClusterConfiguration {
        try load(path: defaultFilePath)
    }

    public static func load(path: String) throws -> ClusterConfiguration {
        let text: String
        do {
            text = try SystemFiles.readText(path: path)
        } catch let error as SystemFileError {
            var hint = ""
            if SystemFiles.environment(environmentVariable) == nil {
                hint = " (set \(environmentVariable) to the cluster's configuration file)"
            }
            throw ConfigurationError(source: path, line: nil, reason: "cannot read the file: \(error.reason)\(hint)")
        }
        return try ClusterConfiguration(text: text, baseDirectory: SystemFiles.directory(of: path), source: path)
    }

    /// Parses configuration text.
    ///
    /// - Parameters:
    ///   - text: lines of `key = value`; `#` starts a comment line.
    ///   - baseDirectory: what relative file paths are relative to.
    ///   - source: the name errors use for this text.
    /// - Throws: `ConfigurationError` for unknown keys, malformed or repeated lines and
    ///   missing required settings.
    public init(text: String, baseDirectory: String, source: String = "<inline>") throws {
        var clusterID: String?
        var trustAnchor: String?
        var nodes: [NodeAddress] = []
        var connectTimeout: Int?
        var operationTimeout: Int?
        var maxConnections: Int?
        var failoverFloor: Int?
        var failoverCeiling: Int?
        var failoverMultiple: Int?
        var certificate: String?
        var key: String?

        func fail(_ line: Int, _ reason: String) -> ConfigurationError {
            ConfigurationError(source: source, line: line, reason: reason)
        }
        func setOnce<T>(_ slot: inout T?, _ value: T, _ name: String, _ line: Int) throws {
            guard slot == nil else { throw fail(line, "\(name) is set more than once") }
            slot = value
        }
        func path(_ value: String) -> String { SystemFiles.resolve(value, relativeTo: baseDirectory) }

        for (index, rawLine) in text.split(
            omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }
        ).enumerated() {
            let lineNumber = index + 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw fail(lineNumber, "expected `key = value`, found `\(line)`")
            }
            let name = String(line[..<equals].trimmingWhitespace())
            let value = String(line[line.index(after: equals)...].trimmingWhitespace())
            guard !value.isEmpty else { throw fail(lineNumber, "\(name) has no value") }
            switch name {
            case "cluster_id":
                try setOnce(&clusterID, value, name, lineNumber)
            case "trust_anchor":
                try setOnce(&trustAnchor, path(value), name, lineNumber)
            case "client_certificate":
                try setOnce(&certificate, path(value), name, lineNumber)
            case "client_key":
                try setOnce(&key, path(value), name, lineNumber)
            case "connect_timeout_ms":
                try setOnce(&connectTimeout, try Self.milliseconds(value, name, fail(lineNumber, "")), name, lineNumber)
            case "operation_timeout_ms":
                try setOnce(
                    &operationTimeout, try Self.milliseconds(value, name, fail(lineNumber, "")), name, lineNumber)
            case "max_connections_per_node":
                guard let number = Int(value), (1...256).contains(number) else {
                    throw fail(lineNumber, "max_connections_per_node must be a number from 1 to 256, found `\(value)`")
                }
                try setOnce(&maxConnections, number, name, lineNumber)
            case "failover_min_ms":
                try setOnce(&failoverFloor, try Self.milliseconds(value, name, fail(lineNumber, "")), name, lineNumber)
            case "failover_max_ms":
                try setOnce(
                    &failoverCeiling, try Self.milliseconds(value, name, fail(lineNumber, "")), name, lineNumber)
            case "failover_p99_multiple":
                guard let number = Int(value), (1...100).contains(number) else {
                    throw fail(lineNumber, "failover_p99_multiple must be a number from 1 to 100, found `\(value)`")
                }
                try setOnce(&failoverMultiple, number, name, lineNumber)
            case "node":
                let node = try Self.parseNode(value, fail(lineNumber, ""))
                if nodes.contains(where: { $0.id == node.id }) {
                    throw fail(lineNumber, "node id \(node.id) is listed more than once")
                }
                nodes.append(node)
            default:
                throw fail(lineNumber, "unknown setting `\(name)`")
            }
        }

        func missing(_ what: String) -> ConfigurationError {
            ConfigurationError(source: source, line: nil, reason: what)
        }
        guard let clusterID else { throw missing("cluster_id is missing") }
        guard let trustAnchor else { throw missing("trust_anchor is missing") }
        guard !nodes.isEmpty else { throw missing("no `node = ID HOST:PORT` line") }
        if key != nil, certificate == nil { throw missing("client_key is set without client_certificate") }
        let failover = FailoverPolicy(
            floorMilliseconds: failoverFloor ?? FailoverPolicy.defaultFloorMilliseconds,
            ceilingMilliseconds: failoverCeiling ?? FailoverPolicy.defaultCeilingMilliseconds,
            p99Multiple: failoverMultiple ?? FailoverPolicy.defaultP99Multiple)
        guard failover.floorMilliseconds <= failover.ceilingMilliseconds else {
            throw missing(
                "failover_min_ms (\(failover.floorMilliseconds)) is above failover_max_ms "
                    + "(\(failover.ceilingMilliseconds))")
        }
        self.init(
            clusterID: clusterID, trustAnchorPath: trustAnchor, nodes: nodes,
            connectTimeoutMilliseconds: connectTimeout ?? Self.defaultConnectTimeoutMilliseconds,
            operationTimeoutMilliseconds: operationTimeout ?? Self.defaultOperationTimeoutMilliseconds,
            clientCertificatePath: certificate, clientKeyPath: key, source: source,
            maxConnectionsPerNode: maxConnections ?? Self.defaultMaxConnectionsPerNode, failover: failover)
    }

    /// `template` carries the source and line; only its reason is replaced.
    private static func milliseconds(_ value: String, _ name: String, _ template: ConfigurationError) throws -> Int {
        guard let number = Int(value), number > 0, number <= 3_600_000 else {
            throw template.with(reason: "\(name) must be a number of milliseconds from 1 to 3600000, found `\(value)`")
        }
        return number
    }

    /// `ID HOST:PORT`, with `[v6]:PORT` for IPv6 literals.
    private static func parseNode(_ value: String, _ template: ConfigurationError) throws -> NodeAddress {
        let fields = value.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count == 2 else {
            throw template.with(reason: "expected `node = ID HOST:PORT`, found `node = \(value)`")
        }
        guard let id = Int(fields[0]), (0...15).contains(id) else {
            throw template.with(reason: "node id must be a number from 0 to 15, found `\(fields[0])`")
        }
        let address = fields[1]
        var host: Substring
        var portText: Substring
        if address.hasPrefix("[") {
            guard let close = address.firstIndex(of: "]"), address[close...].hasPrefix("]:") else {
                throw template.with(reason: "expected `[IPv6]:PORT`, found `\(address)`")
            }
            host = address[address.index(after: address.startIndex)..<close]
            portText = address[address.index(close, offsetBy: 2)...]
        } else {
            guard let colon = address.lastIndex(of: ":") else {
                throw template.with(reason: "expected HOST:PORT, found `\(address)`")
            }
            host = address[..<colon]
            portText = address[address.index(after: colon)...]
            if host.contains(":") {
                throw template.with(reason: "write IPv6 addresses as `[ADDRESS]:PORT`, found `\(address)`")
            }
        }
        guard !host.isEmpty else { throw template.with(reason: "node \(id) has no host in `\(address)`") }
        // No host name or address holds a bracket; `[[x]:1` would leave one in the host.
        guard !host.unicodeScalars.contains(where: { $0 == "[" || $0 == "]" }) else {
            throw template.with(reason: "node \(id) has an invalid host `\(host)` in `\(address)`")
        }
        guard let port = UInt16(portText), port > 0 else {
            throw template.with(reason: "node \(id) has an invalid port `\(portText)`")
        }
        return NodeAddress(id: id, host: String(host), port: port)
    }
}

/// A configuration that cannot be used: which file, which line, what is wrong.
public struct ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public let source: String
    public let line: Int?
    public let reason: String

    public init(source: String, line: Int?, reason: String) {
        self.source = source
        self.line = line
        self.reason = reason
    }

    func with(reason: String) -> ConfigurationError {
        ConfigurationError(source: source, line: line, reason: reason)
    }

    public var description: String {
        if let line { return "cluster configuration \(source), line \(line): \(reason)" }
        return "cluster configuration \(source): \(reason)"
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and carriage returns (no Foundation).
    func trimmingWhitespace() -> SubSequence {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }) else { return self[endIndex...] }
        let last = lastIndex(where: { !isSpace($0) })!
        return self[first...last]
    }
}
