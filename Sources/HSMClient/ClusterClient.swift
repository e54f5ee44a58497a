// The cluster client used by the tools and the provider: knows every node, connects
// lazily, logs in everywhere, routes each request to the right node. Synchronous and
// thread-safe with plain locks; no threads of its own, so it can sit in a process that
// forks (nginx) and each process opens its own connections.
//
// Routing today: key creation goes to the home node (the first node that is reachable
// and logged in); an operation on an existing key goes to the node that created it
// (`handle & 0xF`) and fails over to the other nodes when that one cannot take it. Load
// balancing and connection pools grow in here and in NodeChannel; callers use `create`,
// `perform`, `send` and `broadcast` and need not change.

import CloudHSMCore
import Glibc
import OpenSSLKit
import Synchronization

public final class ClusterClient: Sendable {
    public let configuration: ClusterConfiguration
    private let cryptoContext: CryptoContext
    private let tls: TLSContext
    private let channels: [NodeChannel]
    /// Kept so that a reconnect (or a node that was down at login) can log in again.
    private let savedCredentials = Mutex<Credentials?>(nil)
    /// The process the connections belong to; see `resetAfterFork()`.
    private let ownerPID: Atomic<Int32>

    /// Prepares the client; opens no connection.
    ///
    /// - Throws: `ConfigurationError` naming the trust anchor or client certificate file
    ///   that cannot be read or used.
    public init(configuration: ClusterConfiguration, cryptoContext: CryptoContext? = nil) throws {
        self.configuration = configuration
        let context: CryptoContext
        do {
            context = try cryptoContext ?? CryptoContext()
        } catch {
            throw ConfigurationError(source: configuration.source, line: nil, reason: "OpenSSL setup failed: \(error)")
        }
        self.cryptoContext = context
        func setupError(_ what: String, _ path: String, _ reason: String) -> ConfigurationError {
            ConfigurationError(source: configuration.source, line: nil, reason: "\(what) \(path): \(reason)")
        }
        var files = [("trust_anchor", configuration.trustAnchorPath)]
        if let certificate = configuration.clientCertificatePath { files.append(("client_certificate", certificate)) }
        if let key = configuration.clientKeyPath { files.append(("client_key", key)) }
        for (what, path) in files {
            do { try SystemFiles.checkReadable(path: path) } catch let error as SystemFileError {
                throw setupError(what, path, "cannot read the file: \(error.reason)")
            }
        }
        do {
            tls = try TLSContext.client(
                trustAnchorPath: configuration.trustAnchorPath, certificatePath: configuration.clientCertificatePath,
                privateKeyPath: configuration.clientKeyPath, context: context)
        } catch {
            throw setupError("trust_anchor", configuration.trustAnchorPath, "cannot be used for TLS: \(error)")
        }
        channels = configuration.nodes.map { NodeChannel(node: $0) }
        ownerPID = Atomic(getpid())
    }

    /// Loads the configuration (`CLOUDHSM_CONFIG` or /etc/cloudhsm/cluster.cfg) and
    /// prepares a client for it.
    public static func fromDefaultConfiguration() throws -> ClusterClient {
        try ClusterClient(configuration: try ClusterConfiguration.load())
    }

    public var nodes: [NodeAddress] { configuration.nodes }

    /// The credentials of the last successful login, until logout.
    public var credentials: Credentials? { savedCredentials.withLock { $0 } }

    public var isLoggedIn: Bool { credentials != nil }

    /// The node that creates the key with `handle` (its low four bits).
    public static func creatingNodeID(of handle: KeyHandle) -> Int { Int(handle & 0xF) }

    // MARK: Sessions

    /// Logs in on every node; each connection stays logged in.
    ///
    /// - Returns: one result per configured node, in order. The credentials are kept when
    ///   at least one node accepted them, and used to log in on nodes reached later.
    public func login(role: UserRole, user: String, password: String) -> [NodeResult] {
        login(Credentials(role: role, user: user, password: password))
    }

    public func login(_ credentials: Credentials) -> [NodeResult] {
        resetAfterFork()
        let request = HSMRequest.login(role: credentials.role, user: credentials.user, password: credentials.password)
        let exchanges = NodeChannel.exchangeAll(channels, request, credentials: nil, opener: opener)
        let results = zip(channels, exchanges).map { NodeResult(node: $0.node, result: $1.result) }
        if results.contains(where: \.isSuccess) {
            savedCredentials.withLock { $0 = credentials }
        }
        return results
    }

    /// Remembers credentials without contacting any node: each node's connection logs in
    /// with them on first use. For the provider, which must not touch the network before
    /// the host forks (nginx loads keys in its master process).
    public func useCredentials(_ credentials: Credentials) {
        savedCredentials.withLock { $0 = credentials }
    }

    /// Logs out on every node with a logged-in connection; nodes without one report
    /// success (there is nothing to log out). Forgets the saved credentials.
    public func logout() -> [NodeResult] {
        resetAfterFork()
        savedCredentials.withLock { $0 = nil }
        return channels.map { channel in
            guard channel.loggedInAs != nil else { return NodeResult(node: channel.node, result: .success(.success())) }
            return NodeResult(node: channel.node, result: exchange(.logout, on: channel, relogin: nil).result)
        }
    }

    // MARK: Requests

    /// Sends `request` to one node (logging in there first if needed).
    public func send(_ request: HSMRequest, to nodeID: Int) -> Result<HSMResponse, HSMError> {
        resetAfterFork()
        guard let channel = channel(nodeID) else {
            return .failure(HSMError(.noNodeAvailable, "node \(nodeID) is not in \(configuration.source)"))
        }
        return exchange(request, on: channel, relogin: credentials).result
    }

    /// Sends `request` to every node at once (written to all before any answer is read).
    ///
    /// - Returns: one result per configured node, in order.
    public func broadcast(_ request: HSMRequest) -> [NodeResult] {
        resetAfterFork()
        let exchanges = NodeChannel.exchangeAll(channels, request, credentials: credentials, opener: opener)
        return zip(channels, exchanges).map { NodeResult(node: $0.node, result: $1.result) }
    }

    /// Creates a key (or anything new) on the home node: the first node, in configuration
    /// order, that can be reached and logged in on. Nodes passed over appear in the
    /// outcome's attempts. A request that reached a node is repeated elsewhere only when
    /// the node refused it without acting (throttled).
    public func create(_ request: HSMRequest) -> OperationOutcome {
        resetAfterFork()
        let credentials = self.credentials
        var attempts: [NodeResult] = []
        for channel in channels {
            let exchange = exchange(request, on: channel, relogin: credentials)
            attempts.append(NodeResult(node: channel.node, result: exchange.result))
            let refusedWithoutActing: Bool
            if case .failure(let error) = exchange.result, error.code == .throttled {
                refusedWithoutActing = true
            } else {
                refusedWithoutActing = false
            }
            if exchange.wasSent && !refusedWithoutActing {
                return OperationOutcome(result: exchange.result, attempts: attempts)
            }
        }
        let reasons = attempts.map { "node \($0.nodeID): \($0.error?.description ?? "?")" }
        return OperationOutcome(
            result: .failure(HSMError(.noNodeAvailable, reasons.joined(separator: "; "))), attempts: attempts)
    }

    /// Runs an operation on an existing key: first at the node that created it, then, when
    /// that node cannot take it, at the others in configuration order (token keys exist on
    /// every node; a session key only on its creator, so the others answer "invalid
    /// handle").
    ///
    /// Another node is tried only when repeating cannot do harm: the request never reached
    /// the node (connect or login failed), the node refused it without acting (throttled,
    /// not yet replicated), or it is idempotent and the answer was lost.
    public func perform(_ request: HSMRequest, key handle: KeyHandle) -> OperationOutcome {
        resetAfterFork()
        let creator = Self.creatingNodeID(of: handle)
        // A creator missing from this configuration is not fatal: another node may hold
        // the key too.
        let ordered = channels.filter { $0.node.id == creator } + channels.filter { $0.node.id != creator }
        let credentials = self.credentials
        var attempts: [NodeResult] = []
        for channel in ordered {
            let exchange = exchange(request, on: channel, relogin: credentials)
            attempts.append(NodeResult(node: channel.node, result: exchange.result))
            guard case .failure(let error) = exchange.result,
                Self.mayTryElsewhere(request, error: error, wasSent: exchange.wasSent)
            else { break }
        }
        return OperationOutcome(result: attempts.last!.result, attempts: attempts)
    }

    /// Whether a failed request may be repeated on another node.
    static func mayTryElsewhere(_ request: HSMRequest, error: HSMError, wasSent: Bool) -> Bool {
        if !wasSent { return true }
        switch error.code {
        case .throttled, .keyNotReplicated: return true
        case .connectionLost, .timedOut: return request.isIdempotent
        default: return false
        }
    }

    /// The first node, in configuration order, that is reachable and logged in (logging
    /// in with the saved credentials where needed); nil when there is none.
    public func homeNode() -> NodeAddress? {
        resetAfterFork()
        guard let credentials else { return nil }
        for channel in channels {
            if channel.loggedInAs != nil { return channel.node }
            // A cheap request that also opens and logs in the connection.
            if case .success = exchange(.generateRandom(count: 1), on: channel, relogin: credentials).result {
                return channel.node
            }
        }
        return nil
    }

    /// Closes this process's connections (with a TLS goodbye). The client stays usable:
    /// the next request reconnects.
    public func close() {
        resetAfterFork()
        for channel in channels { channel.close() }
    }

    // MARK: Fork

    /// Forgets connections inherited from a parent process, without writing on them. Every
    /// public entry point calls this first, so a forked child opens its own connections
    /// (and logs in again with the saved credentials) on first use.
    public func resetAfterFork() {
        let pid = getpid()
        let previous = ownerPID.exchange(pid, ordering: .acquiringAndReleasing)
        guard previous != pid else { return }
        for channel in channels { channel.forgetInheritedConnection() }
    }

    // MARK: Internals

    private func channel(_ nodeID: Int) -> NodeChannel? { channels.first { $0.node.id == nodeID } }

    private func exchange(_ request: HSMRequest, on channel: NodeChannel, relogin: Credentials?) -> NodeChannel.Exchange
    {
        channel.exchange(request, credentials: relogin, opener: opener)
    }

    /// Opens a connection to a node with this client's TLS context and timeouts.
    private var opener: NodeChannel.Opener {
        let tls = self.tls
        let configuration = self.configuration
        return { node in
            try NodeConnection.open(
                node: node, tls: tls, connectTimeoutMilliseconds: configuration.connectTimeoutMilliseconds,
                operationTimeoutMilliseconds: configuration.operationTimeoutMilliseconds)
        }
    }
}
