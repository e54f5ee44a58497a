// Everything the client keeps for one node: a pool of TLS connections (opened on demand up
// to `max_connections_per_node`, reused, each logged in once), the node's health (down,
// backoff, probe) and its counters. One request at a time per connection, as the protocol
// requires; a caller leases a connection, uses it without any lock held, and returns it.

import CloudHSMCore
import Glibc
import OpenSSLKit
import Synchronization

final class NodeChannel: @unchecked Sendable {
    // @unchecked: `slots` and `opening` are guarded by `monitor`; a slot's connection is
    // used only by the caller that leased it. Everything else is Atomic or Mutex.
    let node: NodeAddress
    let maxConnections: Int
    private let monitor = Monitor()
    private var slots: [Slot] = []
    /// Connections being opened right now (outside the lock); they count toward the bound.
    private var opening = 0
    private var nextSlotID = 1

    /// Requests chosen for this node and not yet answered: the load-balancing measure.
    let outstanding = Atomic<Int>(0)
    let requestsSent = Atomic<UInt64>(0)
    let failures = Atomic<UInt64>(0)
    let busyAnswers = Atomic<UInt64>(0)
    let probes = Atomic<UInt64>(0)
    let health = Mutex(NodeHealth())
    /// What the node's recent answers took: the base of its failover deadline.
    let latency = Mutex(LatencyWindow())

    /// One pooled connection. `busy` and `loggedInAs` change only under the monitor.
    final class Slot {
        let id: Int
        let connection: NodeConnection
        var loggedInAs: Credentials?
        var busy = true

        init(id: Int, connection: NodeConnection) {
            self.id = id
            self.connection = connection
        }
    }

    /// A connection lent to one caller. `loggedInAs` is the caller's copy, written back on
    /// release.
    enum Leased {
        case leased(Lease)
        case failed(Exchange)
    }

    struct Lease {
        let slot: Slot
        var loggedInAs: Credentials?
        let isFresh: Bool
    }

    /// The result of one exchange and what it says about the node.
    struct Exchange {
        var result: Result<HSMResponse, HSMError>
        /// False when the request cannot have reached the node (no connection, login
        /// failed, no free connection): another node may safely be tried instead.
        var wasSent: Bool
        /// The connection used; session keys made on it live only there.
        var slotID: Int? = nil
        /// A transport failure (refused, reset, timeout, TLS): the node is taken out.
        var nodeFailed = false
        /// Every connection stayed busy: the node is overloaded, not broken.
        var poolExhausted = false
        /// A pinned (session) connection no longer exists.
        var sessionGone = false
        /// How long the node took to answer the request (not its login), for the node's
        /// latency window; nil without an answer.
        var latencyMilliseconds: UInt64? = nil
        /// A reused connection turned out closed before the request was written on it.
        var staleConnection = false
    }

    init(node: NodeAddress, maxConnections: Int) {
        self.node = node
        self.maxConnections = max(1, maxConnections)
    }

    // MARK: Exchanges

    /// How long one exchange may wait at each step. A routed idempotent request gets short
    /// bounds (`FailoverPolicy`), so that a stalled node costs little before another node
    /// is asked; everything else waits as long as the configuration says.
    struct Limits {
        /// For a free pooled connection.
        var leaseWaitMilliseconds: Int
        /// To open a new connection (connect, handshake, cluster check); nil: the
        /// configuration's connect timeout.
        var openMilliseconds: Int? = nil
        /// For the answer to the request itself (never a login: its hash is slow on
        /// purpose); nil: the configuration's operation timeout.
        var requestMilliseconds: Int? = nil
    }

    /// Opens a connection to the node, within the bound given (nil: the configuration's).
    typealias Opener = (NodeAddress, _ openMilliseconds: Int?) throws -> NodeConnection

    /// Sends `request` on a pooled connection (or on connection `pinned`, for session
    /// keys), opening one when none is idle and the bound allows, and logging in first
    /// when `credentials` are given and the connection is not logged in as them.
    func exchange(
        _ request: HSMRequest, credentials: Credentials?, opener: Opener, pinned: Int? = nil, limits: Limits
    ) -> Exchange {
        let started = start(request, credentials: credentials, opener: opener, pinned: pinned, limits: limits)
        return complete(
            started, request: request, credentials: credentials, opener: opener, pinned: pinned, limits: limits)
    }

    /// Sends `request` to every channel at once: writes it on one connection per node
    /// before waiting for the first answer, so the nodes work in parallel (a login's slow
    /// password hash costs the slowest node's time, not the sum) without a thread.
    ///
    /// Leases are taken in array order and single exchanges hold one lease only, so two
    /// broadcasts, or a broadcast and single requests, cannot deadlock.
    static func exchangeAll(
        _ channels: [NodeChannel], _ request: HSMRequest, credentials: Credentials?, opener: Opener, limits: Limits
    ) -> [Exchange] {
        let started = channels.map {
            $0.start(request, credentials: credentials, opener: opener, pinned: nil, limits: limits)
        }
        return zip(channels, started).map { channel, started in
            var exchange = channel.complete(
                started, request: request, credentials: credentials, opener: opener, pinned: nil, limits: limits)
            // Answers are read one node after the other: a later node's time includes the
            // earlier ones', which says nothing about that node.
            exchange.latencyMilliseconds = nil
            return exchange
        }
    }

    /// Where an exchange stands after its request was (or could not be) written.
    enum Started {
        case finished(Exchange)
        case pending(Lease, NodeConnection.PendingRequest)
    }

    private func start(
        _ request: HSMRequest, credentials: Credentials?, opener: Opener, pinned: Int?, limits: Limits,
        mayRetry: Bool = true
    ) -> Started {
        func again() -> Started {
            dropIdleConnections()
            return start(
                request, credentials: credentials, opener: opener, pinned: pinned, limits: limits, mayRetry: false)
        }
        var lease: Lease
        switch self.lease(pinned: pinned, opener: opener, limits: limits) {
        case .failed(let failure): return .finished(failure)
        case .leased(let leased): lease = leased
        }
        if let failure = prepare(&lease, request: request, credentials: credentials) {
            // The login found a reused connection closed (idle too long, or not logged in
            // within the node's deadline): nothing was asked yet, so a fresh one may.
            if failure.staleConnection, mayRetry, pinned == nil { return again() }
            return .finished(failure)
        }
        let connection = lease.slot.connection
        // A key creation (or deletion) must not be repeated blindly; a reused connection
        // that the node closed while it sat idle would lose it in doubt. A cheap request
        // first proves the connection alive, so the real one is sent on a working stream.
        if !lease.isFresh && Self.needsLivenessCheck(request) {
            do {
                _ = try connection.send(.nodeInfo)
            } catch {
                release(lease, keep: false)
                guard mayRetry, pinned == nil else { return .finished(failedBeforeSending(error, lease)) }
                return again()
            }
        }
        do {
            return .pending(lease, try connection.begin(request, timeoutMilliseconds: limits.requestMilliseconds))
        } catch {
            release(lease, keep: false)
            // Nothing reached the node when a reused connection failed to write.
            if mayRetry, pinned == nil, !lease.isFresh, Self.mayRepeatOnFreshConnection(request) {
                return again()
            }
            return .finished(
                Exchange(
                    result: .failure(Self.hsmError(error, otherwise: .connectionLost)), wasSent: true,
                    slotID: lease.slot.id, nodeFailed: true))
        }
    }

    /// Reads the answer and records what it changed (who is logged in).
    private func complete(
        _ started: Started, request: HSMRequest, credentials: Credentials?, opener: Opener, pinned: Int?,
        limits: Limits, mayRetry: Bool = true
    ) -> Exchange {
        guard case .pending(var lease, let pending) = started else {
            if case .finished(let exchange) = started { return exchange }
            fatalError("unreachable")
        }
        func again() -> Exchange {
            dropIdleConnections()
            let started = start(
                request, credentials: credentials, opener: opener, pinned: pinned, limits: limits, mayRetry: false)
            return complete(
                started, request: request, credentials: credentials, opener: opener, pinned: pinned, limits: limits,
                mayRetry: false)
        }
        do {
            let response = try lease.slot.connection.finish(pending)
            let latency = monotonicNow() &- pending.sentAt
            if response.code.isSuccess {
                switch request {
                case .login(let role, let user, let password):
                    lease.loggedInAs = Credentials(role: role, user: user, password: password)
                case .logout:
                    lease.loggedInAs = nil
                default: break
                }
            }
            // A node at its connection limit answers a login throttled and closes (C2).
            let nodeCloses = response.code == .throttled && Self.isSessionRequest(request)
            release(lease, keep: !nodeCloses)
            let result: Result<HSMResponse, HSMError> =
                response.code.isSuccess ? .success(response) : .failure(HSMError(response.code, response.detail))
            return Exchange(result: result, wasSent: true, slotID: lease.slot.id, latencyMilliseconds: latency)
        } catch let notice as NodeNotice {
            release(lease, keep: false)
            // The node closed the connection before it acted on the request.
            if notice.error.code == .throttled {
                return Exchange(result: .failure(notice.error), wasSent: false, slotID: lease.slot.id)
            }
            if mayRetry, pinned == nil, !lease.isFresh { return again() }
            return Exchange(result: .failure(notice.error), wasSent: false, slotID: lease.slot.id, nodeFailed: true)
        } catch {
            release(lease, keep: false)
            let hsmError = Self.hsmError(error, otherwise: .connectionLost)
            // A stale idle connection (the node restarted or closed it) fails on first
            // use; some requests are worth one more try on a fresh connection. Its idle
            // siblings are probably stale too.
            guard mayRetry, pinned == nil, !lease.isFresh, hsmError.code == .connectionLost,
                Self.mayRepeatOnFreshConnection(request)
            else {
                return Exchange(result: .failure(hsmError), wasSent: true, slotID: lease.slot.id, nodeFailed: true)
            }
            return again()
        }
    }

    /// The `HSMError` a failure carries (a notice's, or the client's own), else one with
    /// code `otherwise`.
    static func hsmError(_ error: Error, otherwise code: HSMReturnCode) -> HSMError {
        if let error = error as? HSMError { return error }
        if let notice = error as? NodeNotice { return notice.error }
        return HSMError(code, "\(error)")
    }

    static func isSessionRequest(_ request: HSMRequest) -> Bool {
        switch request {
        case .login, .logout: return true
        default: return false
        }
    }

    /// Requests worth one more try when a reused connection turns out to be closed. Login
    /// and logout are included: a node that closed an idle connection (or closed it after
    /// a failed login) never saw the request, and a second attempt is what the user meant.
    static func mayRepeatOnFreshConnection(_ request: HSMRequest) -> Bool {
        isSessionRequest(request) || request.isIdempotent
    }

    /// Requests that change state and cannot be repeated: checked on a reused connection
    /// before they are sent.
    static func needsLivenessCheck(_ request: HSMRequest) -> Bool {
        !isSessionRequest(request) && !request.isIdempotent
    }

    /// Logs in on the leased connection when it is not logged in as `credentials` (logging
    /// out a different user first). Returns the failed exchange, having released the
    /// lease, or nil when the connection is ready.
    private func prepare(_ lease: inout Lease, request: HSMRequest, credentials: Credentials?) -> Exchange? {
        guard !Self.isSessionRequest(request) else { return nil }
        guard let credentials, lease.loggedInAs != credentials else { return nil }
        let connection = lease.slot.connection
        do {
            if lease.loggedInAs != nil {
                _ = try connection.send(.logout)
                lease.loggedInAs = nil
            }
            let login = HSMRequest.login(role: credentials.role, user: credentials.user, password: credentials.password)
            let response = try connection.send(login)
            guard response.code.isSuccess else {
                // A throttled login (C2) is followed by the node closing the connection;
                // it routes like any throttled answer: another node, this one not down.
                release(lease, keep: response.code != .throttled)
                let detail = response.detail.isEmpty ? "" : ": \(response.detail)"
                return Exchange(
                    result: .failure(HSMError(response.code, "logging in as \(credentials) failed\(detail)")),
                    wasSent: false, slotID: lease.slot.id)
            }
            lease.loggedInAs = credentials
            return nil
        } catch let notice as NodeNotice where notice.error.code == .throttled {
            release(lease, keep: false)
            return Exchange(result: .failure(notice.error), wasSent: false, slotID: lease.slot.id)
        } catch {
            release(lease, keep: false)
            var failure = failedBeforeSending(error, lease)
            let code = Self.hsmError(error, otherwise: .connectionLost).code
            failure.staleConnection = !lease.isFresh && (code == .connectionLost || error is NodeNotice)
            return failure
        }
    }

    private func failedBeforeSending(_ error: Error, _ lease: Lease) -> Exchange {
        Exchange(
            result: .failure(Self.hsmError(error, otherwise: .connectionLost)), wasSent: false,
            slotID: lease.slot.id, nodeFailed: true)
    }

    // MARK: The pool

    /// Lends an idle connection (the lowest-numbered one, so a single-threaded tool keeps
    /// using one connection per node and sees its session keys), else opens one when the
    /// bound allows, else waits up to `waitMilliseconds` for one to come back.
    private func lease(pinned: Int?, opener: Opener, limits: Limits) -> Leased {
        let waitMilliseconds = limits.leaseWaitMilliseconds
        let deadline = monotonicNow() + UInt64(max(1, waitMilliseconds))
        monitor.lock()
        while true {
            dropUnusableIdleLocked()
            if let pinned {
                guard let slot = slots.first(where: { $0.id == pinned }) else {
                    monitor.unlock()
                    return .failed(
                        Exchange(
                            result: .failure(
                                HSMError(
                                    .invalidHandle,
                                    "the session on \(node) that held this session key has ended "
                                        + "(its connection closed); session keys die with their session")),
                            wasSent: false, sessionGone: true))
                }
                if !slot.busy {
                    slot.busy = true
                    monitor.unlock()
                    return .leased(Lease(slot: slot, loggedInAs: slot.loggedInAs, isFresh: false))
                }
            } else if let slot = slots.first(where: { !$0.busy }) {
                slot.busy = true
                monitor.unlock()
                return .leased(Lease(slot: slot, loggedInAs: slot.loggedInAs, isFresh: false))
            } else if slots.count + opening < maxConnections {
                opening += 1
                monitor.unlock()
                // Connect and handshake without the lock: other callers keep using the
                // connections that are open.
                let opened = Result { try opener(node, limits.openMilliseconds) }
                monitor.lock()
                opening -= 1
                switch opened {
                case .success(let connection):
                    let slot = Slot(id: nextSlotID, connection: connection)
                    nextSlotID += 1
                    slots.append(slot)
                    monitor.unlock()
                    return .leased(Lease(slot: slot, loggedInAs: nil, isFresh: true))
                case .failure(let error):
                    monitor.broadcast()
                    monitor.unlock()
                    // A node at its connection limit says so after the handshake (C1): it
                    // is busy, not broken.
                    if let notice = error as? NodeNotice, notice.error.code == .throttled {
                        return .failed(Exchange(result: .failure(notice.error), wasSent: false))
                    }
                    let hsmError =
                        error is HSMError || error is NodeNotice
                        ? Self.hsmError(error, otherwise: .nodeUnreachable)
                        : HSMError(.nodeUnreachable, "\(node): \(error)")
                    return .failed(Exchange(result: .failure(hsmError), wasSent: false, nodeFailed: true))
                }
            }
            if !monitor.wait(untilMonotonicMilliseconds: deadline), monotonicNow() >= deadline {
                let count = slots.count
                monitor.unlock()
                return .failed(
                    Exchange(
                        result: .failure(
                            HSMError(
                                .timedOut,
                                pinned == nil
                                    ? "all \(count) connections to \(node) stayed busy for \(waitMilliseconds) ms"
                                    : "the session key's connection to \(node) stayed busy for \(waitMilliseconds) ms"
                            )), wasSent: false, poolExhausted: true))
            }
        }
    }

    /// Returns a leased connection; `keep` false closes it (it failed, or its stream can
    /// no longer be trusted).
    private func release(_ lease: Lease, keep: Bool) {
        let slot = lease.slot
        monitor.withLock {
            if keep && slot.connection.isUsable {
                slot.loggedInAs = lease.loggedInAs
                slot.busy = false
            } else {
                slots.removeAll { $0 === slot }
                slot.connection.abandon()
            }
            monitor.broadcast()
        }
    }

    /// Adds a connection opened by a probe to the pool, when there is room.
    func adopt(_ connection: NodeConnection) {
        let adopted = monitor.withLock { () -> Bool in
            guard slots.count + opening < maxConnections else { return false }
            let slot = Slot(id: nextSlotID, connection: connection)
            nextSlotID += 1
            slot.busy = false
            slots.append(slot)
            monitor.broadcast()
            return true
        }
        if !adopted { connection.close() }
    }

    /// Called with the monitor held: idle connections that broke or belong to another
    /// process are dropped without writing on them.
    private func dropUnusableIdleLocked() {
        func isDroppable(_ slot: Slot) -> Bool { !slot.busy && !slot.connection.isUsable }
        // Looked for first: on every lease, and there is almost never one to drop.
        guard slots.contains(where: isDroppable) else { return }
        slots.removeAll { slot in
            guard isDroppable(slot) else { return false }
            slot.connection.abandon()
            return true
        }
    }

    /// Closes every idle connection: after one turned out stale, or the node failed.
    func dropIdleConnections() {
        let dropped = monitor.withLock { () -> [Slot] in
            let idle = slots.filter { !$0.busy }
            slots.removeAll { !$0.busy }
            return idle
        }
        for slot in dropped { slot.connection.abandon() }
    }

    /// Ids of connections logged in as someone, for logout.
    func loggedInSlots() -> [Int] {
        monitor.withLock { slots.filter { $0.loggedInAs != nil && $0.connection.isUsable }.map(\.id) }
    }

    var openConnections: Int { monitor.withLock { slots.count } }

    /// Drops connections opened by another process (the parent, before fork) without
    /// writing on them, and forgets the parent's in-flight count; the child opens its own
    /// connections on next use.
    func forgetInheritedConnections() {
        let inherited = monitor.withLock { () -> [Slot] in
            let all = slots
            slots.removeAll()
            opening = 0
            return all
        }
        for slot in inherited { slot.connection.abandon() }
        outstanding.store(0, ordering: .relaxed)
    }

    /// Closes this process's connections with a TLS goodbye.
    func close() {
        let all = monitor.withLock { () -> [Slot] in
            let idle = slots.filter { !$0.busy }
            slots.removeAll { !$0.busy }
            return idle
        }
        for slot in all { slot.connection.close() }
    }
}
