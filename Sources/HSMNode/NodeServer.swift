// The node's network face: TLS 1.3 over TCP, one thread per connection, one request at a
// time per connection. Malformed input gets an "invalid request" answer and a close;
// nothing a client sends can crash the node.
//
// Against clients that never log in (docs/architecture.md, "Connections"): the handshake,
// each frame and the login have deadlines that trickled bytes cannot stretch; such
// clients share a small part of the slots (ConnectionAdmission), and when they fill it
// the one that waited longest makes room. Before a close the client should hear about,
// a connection whose handshake completed gets one notice frame: response bit, operation
// 0, request id 0, an HSMResponse failure (0xbb "node busy: connection limit ..." for
// capacity).

import CloudHSMCore
import Foundation
import OpenSSLKit
import Synchronization

public final class NodeServer: @unchecked Sendable {
    // The listener, TLS context, handler and limits are set once in init; the slots live
    // in `registry`, behind its mutex.
    public let handler: RequestHandler
    public let limits: ConnectionLimits
    private let listener: TCPListener
    private let tls: TLSContext
    private let registry: Mutex<Registry>
    private let throttle = Mutex(LogThrottle())
    private let isStopped = Atomic<Bool>(false)
    /// Open connections from peer nodes (they hold logged-in slots), for the metrics.
    private let peerConnections = Atomic<Int>(0)
    /// Time a closing connection gives the client to read its last frame.
    static let lingerMilliseconds = 500

    public var port: UInt16 { listener.port }

    /// Answers peer operations (0x40 and up) on connections whose client certificate names
    /// a configured peer node; set once before `serve()`.
    public var replicator: Replicator?

    public init(
        handler: RequestHandler, host: String, port: UInt16, tls: TLSContext, limits: ConnectionLimits = .init()
    ) throws {
        self.handler = handler
        self.tls = tls
        self.limits = limits
        let metrics = handler.state.metrics
        self.registry = Mutex(Registry(admission: ConnectionAdmission(limits: limits), metrics: metrics))
        self.listener = try TCPListener(host: host, port: port)
        metrics.addCollector { [weak self] metrics in self?.collect(into: metrics) }
    }

    /// Open connections by state and the limits they count against, for a scrape.
    private func collect(into metrics: NodeMetrics) {
        let (unauthenticated, authenticated) = registry.withLock {
            ($0.admission.unauthenticatedCount, $0.admission.authenticatedCount)
        }
        let peers = min(peerConnections.load(ordering: .relaxed), authenticated)
        let help = "Open connections: unauthenticated (not logged in yet), logged_in, peer (other nodes)"
        metrics.set("hsmd_connections", labels: [("state", "unauthenticated")], to: Double(unauthenticated), help: help)
        metrics.set("hsmd_connections", labels: [("state", "logged_in")], to: Double(authenticated - peers), help: help)
        metrics.set("hsmd_connections", labels: [("state", "peer")], to: Double(peers), help: help)
        metrics.set(
            "hsmd_connections_max", to: Double(limits.maxConnections),
            help: "Connections the node serves at once (--max-connections)")
        metrics.set(
            "hsmd_unauthenticated_connections_max", to: Double(limits.maxUnauthenticated),
            help: "Of those, connections that have not logged in (--max-unauthenticated)")
    }

    /// Accepts connections until the listener is closed, each on its own thread.
    public func serve() {
        let flusher = Thread { [self] in
            while !isStopped.load(ordering: .relaxed) {
                Thread.sleep(forTimeInterval: 1)
                let lines = throttle.withLock { $0.flush(now: Self.now()) }
                for line in lines { logLine(line) }
            }
        }
        flusher.start()
        while true {
            let socket: TCPSocket
            do {
                socket = try listener.accept()
            } catch {
                return  // closed for shutdown
            }
            let source = socket.sourceKey
            let admitted = registry.withLock { $0.admit(socket, source: source) }
            guard let id = admitted.id else {
                handler.state.metrics.recordRefused(.accept)
                throttledLog(
                    "refusing a connection from \(socket.peerDescription): \(admitted.refusal ?? "")",
                    kind: "connections refused", source: source)
                socket.close()
                continue
            }
            socket.setKeepAlive()
            let thread = Thread { [self] in
                self.serveConnection(id, socket, source: source)
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    public func stop() {
        isStopped.store(true, ordering: .relaxed)
        listener.close()
    }

    // MARK: One connection

    private func serveConnection(_ id: ConnectionID, _ socket: TCPSocket, source: String) {
        let peer = socket.peerDescription
        let connection: TLSConnection
        do {
            connection = try TLSConnection.accept(
                socket, context: tls, deadline: .after(milliseconds: limits.handshakeTimeoutMilliseconds))
        } catch {
            let reason: String
            if let eviction = registry.withLock({ $0.evictionReason(id) }) {
                reason = "closed during the TLS handshake: \(eviction)"
            } else if case TLSError.timedOut = error {
                reason = "no TLS handshake within \(limits.handshakeTimeoutMilliseconds) ms; closing"
                handler.state.metrics.recordHandshakeFailure()
            } else {
                reason = "TLS handshake failed: \(error)"
                handler.state.metrics.recordHandshakeFailure()
            }
            throttledLog("connection from \(peer): \(reason)", kind: "failed TLS handshakes", source: source)
            registry.withLock { $0.finish(id) }
            socket.close()
            return
        }
        var session = handler.openSession()
        var state = ConnectionState(id: id, peer: peer, source: source)
        defer {
            handler.closeSession(&session)
            registry.withLock { $0.finish(id) }
            if let notice = state.notice {
                try? connection.writeFrame(
                    Frame(
                        operation: Frame.responseBit, requestID: 0,
                        payload: HSMResponse(code: notice.code, detail: notice.detail).encodedPayload()),
                    deadline: .after(milliseconds: min(limits.frameTimeoutMilliseconds, 1000)))
            }
            if state.isClosing {
                // The client must be able to read the last frame before the close.
                connection.closeAfterLastFrame(lingeringMilliseconds: Self.lingerMilliseconds)
            } else {
                connection.close()
            }
        }
        // The handshake refused any certificate the CA did not sign, so a subject here is
        // trustworthy; tools present none and keep the ordinary operations only.
        if let replicator, let node = nodeID(fromSubject: connection.peerSubject), replicator.isPeer(node),
            registry.withLock({ $0.admission.promote(id) })
        {
            state.peerNode = node
            peerConnections.add(1, ordering: .relaxed)
            logLine("connection \(id) open from \(peer) (peer node \(node))")
        }
        defer { if state.peerNode != nil { peerConnections.subtract(1, ordering: .relaxed) } }
        if let reason = registry.withLock({ $0.evictionReason(id) }) {
            state.close(.throttled, reason)
            throttledLog("connection \(id) from \(peer) closed: \(reason)", kind: "evicted connections", source: source)
            return
        }
        var loginDeadline = Deadline.after(milliseconds: limits.loginTimeoutMilliseconds)
        while true {
            let authenticated = session.isLoggedIn || state.peerNode != nil
            let frame: Frame
            do {
                frame = try connection.readFrame(
                    startingBy: authenticated ? .after(milliseconds: limits.idleTimeoutMilliseconds) : loginDeadline,
                    wholeWithinMilliseconds: limits.frameTimeoutMilliseconds)
            } catch {
                ended(by: error, &state, authenticated: authenticated)
                return
            }
            guard registry.withLock({ $0.admission.setBusy(id, true) }) else {
                ended(by: TLSError.closed, &state, authenticated: authenticated)  // evicted meanwhile
                return
            }
            guard let answer = answer(frame, &session, &state) else { return }
            do {
                try connection.writeFrame(answer, deadline: .after(milliseconds: limits.frameTimeoutMilliseconds))
            } catch {
                log(state, "error: \(error)", authenticated: authenticated)
                return
            }
            if state.isClosing { return }
            let wasAuthenticated = authenticated
            if !wasAuthenticated, session.isLoggedIn {
                logLine("connection \(id) from \(peer) logged in")
            } else if wasAuthenticated, state.peerNode == nil, !session.isLoggedIn {
                // Logged out: back among the connections that have not logged in, with a
                // login deadline of their own.
                registry.withLock { $0.demote(id, restartingAge: true) }
                loginDeadline = .after(milliseconds: limits.loginTimeoutMilliseconds)
            }
            _ = registry.withLock { $0.admission.setBusy(id, false) }
        }
    }

    /// What one connection's thread knows about it.
    private struct ConnectionState {
        let id: ConnectionID
        let peer: String
        let source: String
        var peerNode: UInt8? = nil
        /// Sent before the close, when set.
        var notice: (code: HSMReturnCode, detail: String)? = nil
        /// The answer just written is the last one.
        var isClosing = false

        mutating func close(_ code: HSMReturnCode, _ detail: String) {
            notice = (code, detail)
            isClosing = true
        }
    }

    /// The response to one frame, or nil to close at once. Logins need a logged-in slot,
    /// taken before the password is checked; a login that fails gives it back.
    private func answer(_ frame: Frame, _ session: inout Session, _ state: inout ConnectionState) -> Frame? {
        if let peerNode = state.peerNode, let replicator, frame.operation >= PeerOperation.listVersions.rawValue,
            !frame.isResponse
        {
            return replicator.answer(frame, from: peerNode)
        }
        let isLogin =
            !session.isLoggedIn && state.peerNode == nil && !frame.isResponse
            && frame.operation == CloudHSMCore.Operation.login.rawValue
        if isLogin, !registry.withLock({ $0.admission.promote(state.id) }) {
            state.isClosing = true
            handler.state.metrics.recordRefused(.login)
            handler.state.metrics.recordThrottled(.connectionLimit)
            throttledLog(
                "connection \(state.id) from \(state.peer): login refused, "
                    + "\(limits.maxAuthenticated) logged-in connections are open",
                kind: "logins refused for the connection limit", source: state.source)
            let refusal = HSMResponse(
                code: .throttled,
                detail: "node busy: connection limit (\(limits.maxAuthenticated) logged-in connections)")
            return Frame(
                operation: frame.operation | Frame.responseBit, requestID: frame.requestID,
                payload: refusal.encodedPayload())
        }
        switch handler.answer(frame, session: &session) {
        case .success(let response):
            if isLogin, !session.isLoggedIn {
                registry.withLock { $0.demote(state.id, restartingAge: false) }
            }
            return response
        case .failure(let error):
            log(state, "sent a malformed frame (\(error)); closing", authenticated: session.isLoggedIn)
            state.isClosing = true
            let response = HSMResponse(code: .invalidRequest, detail: error.description)
            return Frame(
                operation: frame.operation | Frame.responseBit, requestID: frame.requestID,
                payload: response.encodedPayload())
        }
    }

    /// Logs why reading stopped and chooses the notice, if any.
    private func ended(by error: Error, _ state: inout ConnectionState, authenticated: Bool) {
        if let eviction = registry.withLock({ $0.evictionReason(state.id) }) {
            state.close(.throttled, eviction)
            throttledLog(
                "connection \(state.id) from \(state.peer) closed: \(eviction)", kind: "evicted connections",
                source: state.source)
            return
        }
        switch error {
        case TLSError.closed:
            log(state, "closed", authenticated: authenticated)
        case TLSError.timedOut where authenticated:
            log(state, "idle for \(limits.idleTimeoutMilliseconds / 1000) s, closing", authenticated: true)
        case TLSError.timedOut:
            let detail =
                "no login within \(limits.loginTimeoutMilliseconds) ms of the TLS handshake; closing the connection"
            state.close(.notLoggedIn, detail)
            log(state, detail, authenticated: false)
        case let incomplete as IncompleteFrame:
            state.close(.invalidRequest, "\(incomplete); closing the connection")
            log(state, "\(incomplete); closing", authenticated: authenticated)
        case let wire as WireError:
            state.close(.invalidRequest, wire.description)
            log(state, "sent a malformed frame (\(wire)); closing", authenticated: authenticated)
        default:
            log(state, "error: \(error)", authenticated: authenticated)
        }
    }

    /// A line about a connection: always for logged-in ones and peers, rationed for the
    /// others (whose number a client can raise at will).
    private func log(_ state: ConnectionState, _ message: String, authenticated: Bool) {
        let line = "connection \(state.id) from \(state.peer): \(message)"
        if authenticated {
            logLine(line)
        } else {
            throttledLog(line, kind: "connections closed before login", source: state.source)
        }
    }

    private func throttledLog(_ line: String, kind: String, source: String) {
        let lines = throttle.withLock { $0.lines(for: line, kind: kind, source: source, now: Self.now()) }
        for line in lines { logLine(line) }
    }

    static func now() -> Int { Int(ProcessInfo.processInfo.systemUptime * 1000) }
}

/// The slots (ConnectionAdmission) and what it takes to act on them: each connection's
/// socket, so that an eviction can wake the thread blocked reading it.
private struct Registry {
    var admission: ConnectionAdmission
    private let metrics: NodeMetrics
    private var sockets: [ConnectionID: TCPSocket] = [:]
    private var evictions: [ConnectionID: String] = [:]
    private var nextID: ConnectionID = 0

    init(admission: ConnectionAdmission, metrics: NodeMetrics) {
        self.admission = admission
        self.metrics = metrics
    }

    /// Registers a new connection; evicts another to make room if needed.
    mutating func admit(_ socket: TCPSocket, source: String) -> (id: ConnectionID?, refusal: String?) {
        nextID += 1
        switch admission.admit(nextID, source: source) {
        case .refused(let why):
            return (nil, why)
        case .admitted(let eviction):
            if let eviction { evict(eviction) }
            sockets[nextID] = socket
            metrics.recordAccepted()
            return (nextID, nil)
        }
    }

    /// Moves a connection back among those that have not logged in (see
    /// `ConnectionAdmission.demote`), evicting another if that share is now over.
    mutating func demote(_ id: ConnectionID, restartingAge: Bool) {
        if let eviction = admission.demote(id, restartingAge: restartingAge) { evict(eviction) }
    }

    /// Why `id` was evicted, if it was.
    func evictionReason(_ id: ConnectionID) -> String? { evictions[id] }

    /// The connection's thread is done with it. Its socket is forgotten here, under the
    /// lock, before the thread closes it, so an eviction never shuts down a descriptor
    /// number that a newer connection has reused.
    mutating func finish(_ id: ConnectionID) {
        admission.remove(id)
        sockets[id] = nil
        evictions[id] = nil
    }

    private mutating func evict(_ eviction: ConnectionAdmission.Eviction) {
        metrics.recordEvicted()
        evictions[eviction.id] = eviction.reason
        sockets[eviction.id]?.interruptReads()
    }
}
