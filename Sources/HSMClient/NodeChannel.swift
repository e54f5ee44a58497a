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
    }

    typealias Opener = (NodeAddress) throws -> NodeConnection

    init(node: NodeAddress, maxConnections: Int) {
        self.node = node
        self.maxConnections = max(1, maxConnections)
    }

    // MARK: Exchanges

    /// Sends `request` on a pooled connection (or on connection `pinned`, for session
    /// keys), opening one when none is idle and the bound allows, and logging in first
    /// when `credentials` are given and the connection is not logged in as them.
    func exchange(
        _ request: HSMRequest, credentials: Credentials?, opener: Opener, pinned: Int? = nil, waitMilliseconds: Int
    ) -> Exchange {
        let started = start(
            request, credentials: credentials, opener: opener, pinned: pinned, waitMilliseconds: waitMilliseconds)
        return complete(
            started, request: request, credentials: credentials, opener: opener, pinned: pinned,
            waitMilliseconds: waitMilliseconds)
    }

    /// Sends `request` to every channel at once: writes it on one connection per node
    /// before waiting for the first answer, so the nodes work in parallel (a login's slow
    /// password hash costs the slowest node's time, not the sum) without a thread.
    ///
    /// Leases are taken in array order and single exchanges hold one lease only, so two
    /// broadcasts, or a broadcast and single requests, cannot deadlock.
    static func exchangeAll(
        _ channels: [NodeChannel], _ request: HSMRequest, credentials: Credentials?, opener: Opener,
        waitMilliseconds: Int
    ) -> [Exchange] {
        let started = channels.map {
            $0.start(request, credentials: credentials, opener: opener, pinned: nil, waitMilliseconds: waitMilliseconds)
        }
        return zip(channels, started).map { channel, started in
            channel.complete(
                started, request: request, credentials: credentials, opener: opener, pinned: nil,
                waitMilliseconds: waitMilliseconds)
        }
    }

    /// Where an exchange stands after its request was (or could not be) written.
    enum Started {
        case finished(Exchange)
        case pending(Lease, NodeConnection.PendingRequest)
    }

    private func start(
        _ request: HSMRequest, credentials: Credentials?, opener: Opener, pinned: Int?, waitMilliseconds: Int,
        mayRetry: Bool = true
    ) -> Started {
        var lease: Lease
        switch self.lease(pinned: pinned, opener: opener, waitMilliseconds: waitMilliseconds) {
        case .failed(let failure): return .finished(failure)
        case .leased(let leased): lease = leased
        }
        if let failure = prepare(&lease, request: request, credentials: credentials) {
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
                dropIdleConnections()
                return start(
                    request, credentials: credentials, opener: opener, pinned: pinned,
                    waitMilliseconds: waitMilliseconds, mayRetry: false)
            }
        }
        do {
            return .pending(lease, try connection.begin(request))
        } catch {
            release(lease, keep: false)
            // Nothing reached the node when a reused connection failed to write.
            if mayRetry, pinned == nil, !lease.isFresh, Self.mayRepeatOnFreshConnection(request) {
                dropIdleConnections()
                return start(
                    request, credentials: credentials, opener: opener, pinned: pinned,
                    waitMilliseconds: waitMilliseconds, mayRetry: false)
            }
            let hsmError = error as? HSMError ?? HSMError(.connectionLost, "\(error)")
            return .finished(
                Exchange(result: .failure(hsmError), wasSent: true, slotID: lease.slot.id, nodeFailed: true))
        }
    }

    /// Reads the answer and records what it changed (who is logged in).
    private func complete(
        _ started: Started, request: HSMRequest, credentials: Credentials?, opener: Opener, pinned: Int?,
        waitMilliseconds: Int, mayRetry: Bool = true
    ) -> Exchange {
        guard case .pending(var lease, let pending) = started else {
            if case .finished(let exchange) = started { return exchange }
            fatalError("unreachable")
        }
        do {
            let response = try lease.slot.connection.finish(pending)
            if response.code.isSuccess {
                switch request {
                case .login(let role, let user, let password):
                    lease.loggedInAs = Credentials(role: role, user: user, password: password)
                case .logout:
                    lease.loggedInAs = nil
                default: break
                }
            }
            release(lease, keep: true)
            let result: Result<HSMResponse, HSMError> =
                response.code.isSuccess ? .success(response) : .failure(HSMError(response.code, response.detail))
            return Exchange(result: result, wasSent: true, slotID: lease.slot.id)
        } catch {
            release(lease, keep: false)
            let hsmError = error as? HSMError ?? HSMError(.connectionLost, "\(error)")
            // A stale idle connection (the node restarted or closed it) fails on first
            // use; some requests are worth one more try on a fresh connection. Its idle
            // siblings are probably stale too.
            guard mayRetry, pinned == nil, !lease.isFresh, hsmError.code == .connectionLost,
                Self.mayRepeatOnFreshConnection(request)
            else {
                return Exchange(result: .failure(hsmError), wasSent: true, slotID: lease.slot.id, nodeFailed: true)
            }
            dropIdleConnections()
            let again = start(
                request, credentials: credentials, opener: opener, pinned: pinned, waitMilliseconds: waitMilliseconds,
                mayRetry: false)
            return complete(
                again, request: request, credentials: credentials, opener: opener, pinned: pinned,
                waitMilliseconds: waitMilliseconds, mayRetry: false)
        }
    }

    /// Requests worth one more try when a reused connection turns out to be closed. Login
    /// and logout are included: a node that closed an idle connection (or closed it after
    /// a failed login) never saw the request, and a second attempt is what the user meant.
    static func mayRepeatOnFreshConnection(_ request: HSMRequest) -> Bool {
        switch request {
        case .login, .logout: return true
        default: return request.isIdempotent
        }
    }

    /// Requests that change state and cannot be repeated: checked on a reused connection
    /// before they are sent.
    static func needsLivenessCheck(_ request: HSMRequest) -> Bool {
        switch request {
        case .login, .logout: return false
        default: return !request.isIdempotent
        }
    }

    /// Logs in on the leased connection when it is not logged in as `credentials` (logging
    /// out a different user first). Returns the failed exchange, having released the
    /// lease, or nil when the connection is ready.
    private func prepare(_ lease: inout Lease, request: HSMRequest, credentials: Credentials?) -> Exchange? {
        switch request {
        case .login, .logout: return nil
        default: break
        }
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
                release(lease, keep: true)
                let detail = response.detail.isEmpty ? "" : ": \(response.detail)"
                return Exchange(
                    result: .failure(HSMError(response.code, "logging in as \(credentials) failed\(detail)")),
                    wasSent: false, slotID: lease.slot.id)
            }
            lease.loggedInAs = credentials
            return nil
        } catch {
            release(lease, keep: false)
            return failedBeforeSending(error, lease)
        }
    }

    private func failedBeforeSending(_ error: Error, _ lease: Lease) -> Exchange {
        Exchange(
            result: .failure(error as? HSMError ?? HSMError(.connectionLost, "\(error)")), wasSent: false,
            slotID: lease.slot.id, nodeFailed: true)
    }

    // MARK: The pool

    /// Lends an idle connection (the lowest-numbered one, so a single-threaded tool keeps
    /// using one connection per node and sees its session keys), else opens one when the
    /// bound allows, else waits up to `waitMilliseconds` for one to come back.
    private func lease(pinned: Int?, opener: Opener, waitMilliseconds: Int) -> Leased {
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
                let opened = Result { try opener(node) }
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
                    let hsmError = error as? HSMError ?? HSMError(.nodeUnreachable, "\(node): \(error)")
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
        slots.removeAll { slot in
            guard !slot.busy, !slot.connection.isUsable else { return false }
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

    /// Whether a connection with this id is still in the pool (a session key's).
    func hasSlot(_ id: Int) -> Bool { monitor.withLock { slots.contains { $0.id == id } } }

    /// Ids of connections logged in as someone, for logout.
    func loggedInSlots() -> [Int] {
        monitor.withLock { slots.filter { $0.loggedInAs != nil && $0.connection.isUsable }.map(\.id) }
    }

    /// Who a connection of this process is logged in as (the first one that is).
    var loggedInAs: Credentials? {
        monitor.withLock { slots.first { $0.loggedInAs != nil && $0.connection.isUsable }?.loggedInAs }
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
