// The cluster client used by the tools and the provider: knows every node, keeps a pool
// of connections per node, sends each operation to the node with the most spare capacity,
// takes failed nodes out and probes them back in, and retries what may be retried.
// Synchronous and thread-safe with plain locks; no threads of its own, so it can sit in a
// process that forks (nginx) and each process opens its own connections.
//
// Routing:
// - An operation on a token key (sign, decrypt, attributes, export...) goes to the up node
//   with the fewest outstanding requests (ties rotate, from a random start in each process,
//   so that short-lived processes do not all begin on one node). Token keys exist on every node
//   under one handle, so any node may serve it.
// - A session key lives only on the connection (node session) that made it; the client
//   remembers which handles it created as session keys and sends their operations there.
// - Key creation goes to one up node, the least loaded; that node replicates.
// - A node that fails in transport is down and skipped; idempotent requests move on to
//   another node. Throttled (0xbb) and not-yet-replicated (0xbc) answers move on too, with
//   a short pause once every node has been tried. A request that changes state is never
//   repeated once it may have reached a node.
// - An idempotent request that another node could serve waits for a node only as long as
//   its failover deadline (FailoverPolicy: a multiple of the node's recent p99, bounded);
//   a node that stalls past it (frozen, hung) loses that connection and is marked down,
//   and the request moves on. Probes are bounded the same way.
// - Every new connection first asks the node's cluster id (nodeInfo, before login), so
//   credentials never go to a node of another cluster.

import CloudHSMCore
import Glibc
import OpenSSLKit
import Synchronization

public final class ClusterClient: Sendable {
    public let configuration: ClusterConfiguration
    private let cryptoContext: CryptoContext
    private let tls: TLSContext
    private let channels: [NodeChannel]
    private let clock: PoolClock
    /// Kept so that new connections (and nodes reached later) log in with them.
    private let savedCredentials = Mutex<Credentials?>(nil)
    /// The `ForkGeneration` the connections belong to; see `resetAfterFork()`.
    private let ownerGeneration: Atomic<UInt64>
    /// Session keys this process created: handle -> (node id, connection id).
    private let sessionKeys = Mutex<[KeyHandle: SessionPin]>([:])
    /// Where the scan for the least loaded node starts, so ties rotate. It starts at a
    /// random place in each process (again after fork): short-lived processes (one
    /// `openssl dgst -sign` each, freshly forked nginx workers) make one or two requests
    /// with no load to see, and a fixed start sent all of them to the same node.
    private let rotor = Atomic<Int>(ClusterClient.randomRotorStart())

    struct SessionPin: Equatable {
        let nodeID: Int
        let slotID: Int
    }

    /// Retry rounds when every node answered throttled or not yet replicated, and the first
    /// pause between rounds (doubling, at most `maximumRoundPause`).
    static let maximumRounds = 8
    static let firstRoundPause = 5
    static let maximumRoundPause = 200

    /// Prepares the client; opens no connection.
    ///
    /// - Throws: `ConfigurationError` naming the trust anchor or client certificate file
    ///   that cannot be read or used.
    public convenience init(configuration: ClusterConfiguration, cryptoContext: CryptoContext? = nil) throws {
        try self.init(configuration: configuration, cryptoContext: cryptoContext, clock: .system)
    }

    /// As above, with the clock the backoffs use (tests inject a manual one).
    public init(configuration: ClusterConfiguration, cryptoContext: CryptoContext?, clock: PoolClock) throws {
        self.configuration = configuration
        self.clock = clock
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
        channels = configuration.nodes.map {
            NodeChannel(node: $0, maxConnections: configuration.maxConnectionsPerNode)
        }
        ownerGeneration = Atomic(ForkGeneration.current)
    }

    public var nodes: [NodeAddress] { configuration.nodes }

    /// The credentials of the last successful login, until logout.
    public var credentials: Credentials? { savedCredentials.withLock { $0 } }

    public var isLoggedIn: Bool { credentials != nil }

    /// The node that creates the key with `handle` (its low four bits).
    public static func creatingNodeID(of handle: KeyHandle) -> Int { Int(handle & 0xF) }

    // MARK: Sessions

    /// Logs in on every node (one connection each, asked in parallel); the pool's other
    /// connections log in with the same credentials when they are first used.
    ///
    /// - Returns: one result per configured node, in order. The credentials are kept when
    ///   at least one node accepted them.
    public func login(role: UserRole, user: String, password: String) -> [NodeResult] {
        login(Credentials(role: role, user: user, password: password))
    }

    public func login(_ credentials: Credentials) -> [NodeResult] {
        resetAfterFork()
        let request = HSMRequest.login(role: credentials.role, user: credentials.user, password: credentials.password)
        let exchanges = NodeChannel.exchangeAll(
            channels, request, credentials: nil, opener: opener, limits: patientLimits)
        for (channel, exchange) in zip(channels, exchanges) { note(exchange, on: channel, request: request) }
        let results = zip(channels, exchanges).map { NodeResult(node: $0.node, result: $1.result) }
        if results.contains(where: \.isSuccess) {
            savedCredentials.withLock { $0 = credentials }
        }
        return results
    }

    /// Remembers credentials without contacting any node: each connection logs in with
    /// them on first use. For the provider, which must not touch the network before the
    /// host forks (nginx loads keys in its master process).
    public func useCredentials(_ credentials: Credentials) {
        savedCredentials.withLock { $0 = credentials }
    }

    /// Logs out on every logged-in connection; a node without one reports success (there
    /// is nothing to log out). Forgets the saved credentials and the session keys (the
    /// nodes destroy them at logout).
    public func logout() -> [NodeResult] {
        resetAfterFork()
        savedCredentials.withLock { $0 = nil }
        sessionKeys.withLock { $0.removeAll() }
        return channels.map { channel in
            var result: Result<HSMResponse, HSMError> = .success(.success())
            for slot in channel.loggedInSlots() {
                let exchange = channel.exchange(
                    .logout, credentials: nil, opener: opener, pinned: slot, limits: patientLimits)
                if exchange.sessionGone { continue }
                note(exchange, on: channel, request: .logout)
                if case .failure = exchange.result, case .success = result { result = exchange.result }
            }
            return NodeResult(node: channel.node, result: result)
        }
    }

    // MARK: Requests

    /// Sends `request` to one node (logging in there first if needed), whether or not the
    /// node is marked down: the tools ask each node for its own answer.
    public func send(_ request: HSMRequest, to nodeID: Int) -> Result<HSMResponse, HSMError> {
        resetAfterFork()
        guard let channel = channel(nodeID) else {
            return .failure(HSMError(.noNodeAvailable, "node \(nodeID) is not in \(configuration.source)"))
        }
        return exchange(request, on: channel).result
    }

    /// Sends `request` to every node at once (written to all before any answer is read).
    ///
    /// - Returns: one result per configured node, in order.
    public func broadcast(_ request: HSMRequest) -> [NodeResult] {
        resetAfterFork()
        let exchanges = NodeChannel.exchangeAll(
            channels, request, credentials: credentials, opener: opener, limits: patientLimits)
        for (channel, exchange) in zip(channels, exchanges) { note(exchange, on: channel, request: request) }
        return zip(channels, exchanges).map { NodeResult(node: $0.node, result: $1.result) }
    }

    /// Creates a key (or anything new) on the least loaded up node, which replicates it.
    /// Another node is tried only when the request cannot have been acted on: it never
    /// reached the node, or the node refused it at once (throttled, not replicated). Once
    /// a creation may have reached a node, its answer (or failure) is the outcome.
    public func create(_ request: HSMRequest) -> OperationOutcome {
        resetAfterFork()
        return route(request, retryInvalidHandle: false, rotate: false)
    }

    /// Runs an operation on an existing key. A session key this client made goes to the
    /// connection that made it; any other key is a token key, present on every node, and
    /// goes to the least loaded up node, moving on to others as `create` describes, and
    /// also after a transport failure or "invalid handle" when the request is idempotent.
    public func perform(_ request: HSMRequest, key handle: KeyHandle) -> OperationOutcome {
        resetAfterFork()
        // Any session key the request names (the key, or the wrapping key of a wrap or
        // unwrap) decides where it must go.
        let pinned = sessionKeys.withLock { keys -> (KeyHandle, SessionPin)? in
            // Most processes (the provider's) never make a session key.
            guard !keys.isEmpty else { return nil }
            if let pin = keys[handle] { return (handle, pin) }
            for key in Self.handles(in: request) { if let pin = keys[key] { return (key, pin) } }
            return nil
        }
        if let (key, pin) = pinned { return performPinned(request, pin: pin, handle: key) }
        return route(request, retryInvalidHandle: request.isIdempotent, rotate: true)
    }

    /// The least loaded node that is reachable and logged in (logging in with the saved
    /// credentials where needed); nil when there is none.
    public func homeNode() -> NodeAddress? {
        resetAfterFork()
        guard credentials != nil else { return nil }
        var tried = NodeIDSet()
        while let channel = pick(excluding: tried, rotate: false) {
            tried.insert(channel.node.id)
            if case .success = exchange(.generateRandom(count: 1), on: channel).result { return channel.node }
        }
        return nil
    }

    /// Closes this process's idle connections (with a TLS goodbye). The client stays
    /// usable: the next request reconnects.
    public func close() {
        resetAfterFork()
        for channel in channels { channel.close() }
    }

    // MARK: Statistics

    /// What this process's client did with each node, for benchmarks and diagnostics.
    public struct NodeStatistics: Sendable, Equatable {
        public let node: NodeAddress
        /// Requests written to the node (logins and probes not counted).
        public let requestsSent: UInt64
        /// Transport failures: refused, reset, timeout, TLS.
        public let failures: UInt64
        /// Throttled (0xbb) and not-yet-replicated (0xbc) answers.
        public let busyAnswers: UInt64
        public let probes: UInt64
        /// Requests chosen for the node and not yet answered.
        public let outstanding: Int
        public let openConnections: Int
        public let isDown: Bool
        /// Why the node is down, or its last failure.
        public let reason: String?
    }

    public func statistics() -> [NodeStatistics] {
        let now = clock.now()
        return channels.map { channel in
            let health = channel.health.withLock { $0 }
            return NodeStatistics(
                node: channel.node, requestsSent: channel.requestsSent.load(ordering: .relaxed),
                failures: channel.failures.load(ordering: .relaxed),
                busyAnswers: channel.busyAnswers.load(ordering: .relaxed),
                probes: channel.probes.load(ordering: .relaxed),
                outstanding: channel.outstanding.load(ordering: .relaxed), openConnections: channel.openConnections,
                isDown: health.isDown, reason: health.isDown ? health.reason(now: now) : health.lastError?.text)
        }
    }

    // MARK: Fork

    /// Forgets connections inherited from a parent process, without writing on them. Every
    /// public entry point calls this first, so a forked child opens its own connections
    /// (and logs in with the saved credentials) on first use. Session keys belong to the
    /// parent's sessions and are forgotten too.
    public func resetAfterFork() {
        let generation = ForkGeneration.current
        guard ownerGeneration.load(ordering: .acquiring) != generation else { return }
        let previous = ownerGeneration.exchange(generation, ordering: .acquiringAndReleasing)
        guard previous != generation else { return }
        for channel in channels { channel.forgetInheritedConnections() }
        sessionKeys.withLock { $0.removeAll() }
        // Workers forked from one parent must not all start at the parent's place.
        rotor.store(Self.randomRotorStart(), ordering: .relaxed)
    }

    /// A random place to start the rotation: from the system's generator, so processes
    /// started in the same instant (or forked from one parent) differ.
    static func randomRotorStart() -> Int {
        var generator = SystemRandomNumberGenerator()
        return Int.random(in: 0..<(1 << 20), using: &generator)
    }

    // MARK: Routing

    /// Sends `request` to the best node, then to others as long as that may do no harm and
    /// may help; fails with `.noNodeAvailable` (each node's reason in the detail) when no
    /// node could serve it.
    private func route(_ request: HSMRequest, retryInvalidHandle: Bool, rotate: Bool) -> OperationOutcome {
        var attempts: [NodeResult] = []
        var reasons: [Int: HSMError] = [:]
        var definitiveFallback: Result<HSMResponse, HSMError>?
        var pause = Self.firstRoundPause
        for round in 0..<Self.maximumRounds {
            var tried = NodeIDSet()
            var worthAnotherRound = false
            while let channel = pick(excluding: tried, rotate: rotate) {
                tried.insert(channel.node.id)
                // Short bounds only where another node could take over: the last
                // candidate is waited for, so a slow cluster is slow, not failing.
                let limits =
                    request.isIdempotent && hasCandidate(excluding: tried)
                    ? failoverLimits(for: channel) : patientLimits
                let exchange = exchange(request, on: channel, limits: limits)
                attempts.append(NodeResult(node: channel.node, result: exchange.result))
                guard case .failure(let error) = exchange.result else {
                    return OperationOutcome(result: exchange.result, attempts: attempts)
                }
                reasons[channel.node.id] = error
                if exchange.nodeFailed {
                    // The node is out (see `note`); another may serve the request unless
                    // it may already have been acted on.
                    if exchange.wasSent && !request.isIdempotent {
                        return OperationOutcome(result: exchange.result, attempts: attempts)
                    }
                    continue
                }
                if exchange.poolExhausted { continue }
                switch error.code {
                case .throttled, .keyNotReplicated:
                    worthAnotherRound = true
                    continue
                case .invalidHandle where retryInvalidHandle:
                    // A node that has not caught up yet may not know a token key; the
                    // answer stands only if no other node knows it either.
                    definitiveFallback = exchange.result
                    continue
                default:
                    return OperationOutcome(result: exchange.result, attempts: attempts)
                }
            }
            guard worthAnotherRound, round + 1 < Self.maximumRounds else { break }
            clock.sleep(pause)
            pause = min(pause * 2, Self.maximumRoundPause)
        }
        if let definitiveFallback {
            return OperationOutcome(result: definitiveFallback, attempts: attempts)
        }
        let now = clock.now()
        // Every node of another cluster: that is the answer, not "no node available".
        let mismatches = channels.compactMap { channel -> String? in
            if let error = reasons[channel.node.id] { return error.code == .clusterMismatch ? error.detail : nil }
            let last = channel.health.withLock { $0.isDown ? $0.lastError : nil }
            return last?.code == .clusterMismatch ? last?.detail : nil
        }
        if mismatches.count == channels.count {
            return OperationOutcome(
                result: .failure(HSMError(.clusterMismatch, mismatches.joined(separator: "; "))), attempts: attempts)
        }
        let detail = channels.map { channel in
            let why =
                reasons[channel.node.id]?.description
                ?? channel.health.withLock { $0.isDown ? $0.reason(now: now) : "not tried" }
            return "node \(channel.node.id) (\(channel.node)): \(why)"
        }
        return OperationOutcome(
            result: .failure(HSMError(.noNodeAvailable, detail.joined(separator: "; "))), attempts: attempts)
    }

    /// Whether a node not in `tried` could still take a request: up, or due for a probe.
    private func hasCandidate(excluding tried: NodeIDSet) -> Bool {
        let now = clock.now()
        return channels.contains { channel in
            !tried.contains(channel.node.id) && channel.health.withLock { $0.state(now: now) } != .down
        }
    }

    /// How long `channel` may take before an idempotent request moves on: its recent
    /// p99 times the policy's multiple, within the policy's bounds and never above the
    /// operation timeout.
    func failoverDeadline(of channel: NodeChannel) -> Int {
        let now = clock.now()
        let p99 = channel.latency.withLock { $0.p99(now: now) }
        return min(configuration.failover.deadline(p99: p99), configuration.operationTimeoutMilliseconds)
    }

    /// The failover deadline bounds every wait of the attempt: a free connection, a new
    /// connection's handshake and cluster check, and the answer. Only a login on a new
    /// connection keeps the long timeout (its hash is slow on purpose).
    private func failoverLimits(for channel: NodeChannel) -> NodeChannel.Limits {
        let deadline = failoverDeadline(of: channel)
        return NodeChannel.Limits(
            leaseWaitMilliseconds: deadline, openMilliseconds: min(deadline, configuration.connectTimeoutMilliseconds),
            requestMilliseconds: deadline)
    }

    /// Waits as long as the configuration says.
    private var patientLimits: NodeChannel.Limits { NodeChannel.Limits(leaseWaitMilliseconds: leaseWait) }

    /// A session key's operation, on the connection that made the key. There is no other
    /// place to try: the key exists nowhere else.
    private func performPinned(_ request: HSMRequest, pin: SessionPin, handle: KeyHandle) -> OperationOutcome {
        guard let channel = channel(pin.nodeID) else {
            return OperationOutcome(result: .failure(HSMError(.noNodeAvailable, "node \(pin.nodeID)")), attempts: [])
        }
        channel.outstanding.add(1, ordering: .relaxed)
        let exchange = channel.exchange(
            request, credentials: credentials, opener: opener, pinned: pin.slotID, limits: patientLimits)
        channel.outstanding.subtract(1, ordering: .relaxed)
        note(exchange, on: channel, request: request)
        // A failure in flight reports itself; the pin stays so that the next request hears
        // that the session (and its keys) ended, once.
        if exchange.sessionGone {
            sessionKeys.withLock { $0[handle] = nil }
        }
        return OperationOutcome(NodeResult(node: channel.node, result: exchange.result))
    }

    /// The up node with the fewest outstanding requests, not in `excluding`; ties go to
    /// the first in an order that rotates per call (`rotate`), else to the first in
    /// configuration order: key creation uses that, so a single-threaded tool keeps making
    /// keys on one node and its handles stay predictable. A down node whose backoff elapsed is
    /// probed by this caller first; when no node at all is up, the one due soonest is
    /// probed regardless, so a cluster that comes back is noticed at once.
    func pick(excluding tried: NodeIDSet, rotate: Bool = true) -> NodeChannel? {
        let count = channels.count
        guard count > 0 else { return nil }
        let start =
            rotate
            ? Int(UInt(bitPattern: rotor.wrappingAdd(1, ordering: .relaxed).oldValue) % UInt(count)) : 0
        var best: NodeChannel?
        var bestLoad = Int.max
        var anyUp = false
        let now = clock.now()
        for offset in 0..<count {
            let channel = channels[(start + offset) % count]
            let state = channel.health.withLock { $0.state(now: now) }
            if state == .up { anyUp = true }
            guard !tried.contains(channel.node.id) else { continue }
            switch state {
            case .up: break
            case .down: continue
            case .probeDue:
                guard channel.health.withLock({ $0.claimProbe(now: now) }), probe(channel) else { continue }
                anyUp = true
            }
            let load = channel.outstanding.load(ordering: .relaxed)
            if load < bestLoad {
                best = channel
                bestLoad = load
            }
        }
        if best == nil && !anyUp {
            // Everything is down: probe the untried node due soonest, now.
            let now = clock.now()
            let candidates = channels.filter { !tried.contains($0.node.id) }
            if let soonest = candidates.min(by: { a, b in
                a.health.withLock { $0.retryAt } < b.health.withLock { $0.retryAt }
            }), soonest.health.withLock({ $0.claimProbe(now: now, force: true) }), probe(soonest) {
                best = soonest
            }
        }
        return best
    }

    /// A probe: a fresh connection and its cluster check (nodeInfo, which needs no login),
    /// all within the node's failover deadline: the probe runs on a caller's thread, which
    /// in nginx serves every connection of its worker, and a frozen node accepts TCP
    /// connections but completes no handshake. On success the node is up again and the
    /// connection joins its pool.
    private func probe(_ channel: NodeChannel) -> Bool {
        channel.probes.add(1, ordering: .relaxed)
        do {
            let bound = min(failoverDeadline(of: channel), configuration.connectTimeoutMilliseconds)
            let connection = try makeConnection(channel.node, openMilliseconds: bound)
            channel.health.withLock { $0.answered() }
            channel.adopt(connection)
            return true
        } catch let notice as NodeNotice where notice.error.code == .throttled {
            // At its connection limit, the node is alive: back in rotation, where it answers
            // throttled or serves.
            channel.busyAnswers.add(1, ordering: .relaxed)
            channel.health.withLock { $0.answered() }
            return true
        } catch {
            let now = clock.now()
            let failure = NodeChannel.hsmError(error, otherwise: .nodeUnreachable)
            channel.health.withLock { $0.probeFailed(failure, now: now) }
            return false
        }
    }

    /// One exchange on `channel`, counted in its outstanding requests while it runs.
    private func exchange(
        _ request: HSMRequest, on channel: NodeChannel, limits: NodeChannel.Limits? = nil
    ) -> NodeChannel.Exchange {
        channel.outstanding.add(1, ordering: .relaxed)
        let exchange = channel.exchange(
            request, credentials: credentials, opener: opener, limits: limits ?? patientLimits)
        channel.outstanding.subtract(1, ordering: .relaxed)
        note(exchange, on: channel, request: request)
        return exchange
    }

    /// Updates the node's counters and health from an exchange, and remembers session keys
    /// made (or forgets those deleted).
    private func note(_ exchange: NodeChannel.Exchange, on channel: NodeChannel, request: HSMRequest) {
        switch request {
        case .login, .logout: break
        default: if exchange.wasSent { channel.requestsSent.add(1, ordering: .relaxed) }
        }
        if let latency = exchange.latencyMilliseconds, request.isIdempotent, !Self.isBusy(exchange.result) {
            let now = clock.now()
            channel.latency.withLock { $0.record(milliseconds: latency, now: now) }
        }
        switch exchange.result {
        case .failure(let error) where exchange.nodeFailed:
            channel.failures.add(1, ordering: .relaxed)
            let now = clock.now()
            channel.health.withLock { $0.failed(error, now: now) }
            // The idle connections go to a node that just failed: never reuse them.
            channel.dropIdleConnections()
            return
        case .failure(let error) where error.code == .throttled || error.code == .keyNotReplicated:
            channel.busyAnswers.add(1, ordering: .relaxed)
        case .failure where exchange.poolExhausted || exchange.sessionGone:
            return
        case .failure(let error) where !exchange.wasSent && error.code.isClientSide:
            return
        case .failure:
            break
        case .success(let response):
            recordSessionKeys(request, response: response, nodeID: channel.node.id, slotID: exchange.slotID)
        }
        // The node answered: it is up.
        if channel.health.withLock({ $0.isDown }) { channel.health.withLock { $0.answered() } }
    }

    /// Throttled and not-yet-replicated answers come at once, whatever the node's load:
    /// they say nothing about how long it takes to serve.
    static func isBusy(_ result: Result<HSMResponse, HSMError>) -> Bool {
        guard case .failure(let error) = result else { return false }
        return error.code == .throttled || error.code == .keyNotReplicated
    }

    private func recordSessionKeys(_ request: HSMRequest, response: HSMResponse, nodeID: Int, slotID: Int?) {
        let isSession: Bool
        switch request {
        case .generateSymmetricKey(_, _, _, let session, _), .generateRSAKeyPair(_, _, _, let session, _),
            .generateECKeyPair(_, _, let session, _), .unwrapKey(_, _, _, let session, _):
            isSession = session
        case .deleteKey(let handle):
            sessionKeys.withLock { $0[handle] = nil }
            return
        default:
            return
        }
        guard isSession, let slotID else { return }
        let pin = SessionPin(nodeID: nodeID, slotID: slotID)
        sessionKeys.withLock { keys in
            switch response.body {
            case .handle(let handle): keys[handle] = pin
            case .keyPair(let publicKey, let privateKey):
                keys[publicKey] = pin
                keys[privateKey] = pin
            default: break
            }
        }
    }

    /// The key handles a request names.
    static func handles(in request: HSMRequest) -> [KeyHandle] {
        switch request {
        case .wrapHostKey(let wrappingKey, _), .unwrapKey(let wrappingKey, _, _, _, _): return [wrappingKey]
        case .wrapKey(let key, let wrappingKey): return [key, wrappingKey]
        case .getAttributes(let key), .deleteKey(let key), .exportPublicKey(let key): return [key]
        case .sign(let key, _, _), .decrypt(let key, _, _): return [key]
        default: return []
        }
    }

    /// Whether `handle` is a session key this process made (and where).
    func sessionPin(of handle: KeyHandle) -> SessionPin? { sessionKeys.withLock { $0[handle] } }

    func channel(_ nodeID: Int) -> NodeChannel? { channels.first { $0.node.id == nodeID } }

    /// How long a caller waits for a free pooled connection before moving on.
    private var leaseWait: Int {
        configuration.operationTimeoutMilliseconds + configuration.connectTimeoutMilliseconds
    }

    /// Opens a connection and checks that the node belongs to the configured cluster
    /// before anything else is sent on it, credentials included. The check costs one
    /// nodeInfo round trip per new connection; connections are long-lived.
    ///
    /// - Parameter openMilliseconds: the bound of the whole opening (connect, handshake,
    ///   check); nil is the configuration's connect timeout for each step.
    private func makeConnection(_ node: NodeAddress, openMilliseconds: Int? = nil) throws -> NodeConnection {
        let started = monotonicNow()
        let connection = try NodeConnection.open(
            node: node, tls: tls,
            connectTimeoutMilliseconds: openMilliseconds ?? configuration.connectTimeoutMilliseconds,
            operationTimeoutMilliseconds: configuration.operationTimeoutMilliseconds)
        let checkTimeout =
            openMilliseconds.map { max(1, $0 - Int(clamping: monotonicNow() &- started)) }
            ?? configuration.connectTimeoutMilliseconds
        do {
            try checkCluster(connection, timeoutMilliseconds: checkTimeout)
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Refuses a node whose nodeInfo names another cluster than the configuration's.
    private func checkCluster(_ connection: NodeConnection, timeoutMilliseconds: Int) throws {
        let node = connection.node
        let response = try connection.send(.nodeInfo, timeoutMilliseconds: timeoutMilliseconds)
        guard response.code.isSuccess, case .nodeInfo(let info) = response.body else {
            let detail = response.detail.isEmpty ? response.code.description : response.detail
            throw HSMError(
                response.code.isSuccess ? .connectionLost : response.code,
                "\(node) did not tell its cluster id before login: \(detail)")
        }
        guard info.clusterId == configuration.clusterID else {
            throw HSMError(
                .clusterMismatch,
                "node \(node.id) (\(node)) belongs to cluster '\(Self.printable(info.clusterId))', but "
                    + "\(configuration.source) is for cluster '\(Self.printable(configuration.clusterID))'")
        }
    }

    /// A node's text made safe to print: control characters escaped, at most 64 characters.
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(64) {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return text.unicodeScalars.count > 64 ? out + "..." : out
    }

    /// Opens a connection to a node with this client's TLS context and timeouts.
    private var opener: NodeChannel.Opener {
        { [self] node, openMilliseconds in try makeConnection(node, openMilliseconds: openMilliseconds) }
    }
}
