// Who may hold the node's connection slots: the bookkeeping behind admission and
// eviction, pure (no sockets, no clock), so the rules are unit-tested on their own.
//
// Connections that have not logged in share a small part of the slots; logged-in ones
// (and peer nodes) have the rest, so clients that never log in cannot take the slots
// that logged-in clients need. When the unauthenticated share is full, a new connection
// takes the slot of an idle unauthenticated one:
// - when the newcomer's source already holds its per-source share, that source's oldest;
// - otherwise the oldest of the source holding the most unauthenticated slots. The brief
//   asked for the oldest overall; picking from the heaviest source first means an
//   attacker spread over many addresses still loses its own connections before a
//   legitimate client (one connection from its address) loses the one it is logging in on.
// A connection answering a request (a login hashing its password, say) is never evicted.

/// The connection limits of one node (hsmd run flags).
public struct ConnectionLimits: Equatable, Sendable {
    /// The TLS handshake must complete within this of the accept.
    public var handshakeTimeoutMilliseconds = 5000
    /// A frame must arrive whole within this of its first byte.
    public var frameTimeoutMilliseconds = 5000
    /// A connection that has not logged in this long after its handshake is closed.
    public var loginTimeoutMilliseconds = 10_000
    /// A logged-in connection (or a peer's) silent this long is closed; clients reconnect.
    public var idleTimeoutMilliseconds = 600_000
    /// Connections at once, of every kind.
    public var maxConnections = 1024
    /// Of those, connections that have not logged in (yet).
    public var maxUnauthenticated = 64
    /// Unauthenticated connections from one source address (an IPv6 /64 counts as one).
    public var maxUnauthenticatedPerSource = 16

    /// Slots for logged-in connections and peer nodes.
    public var maxAuthenticated: Int { maxConnections - maxUnauthenticated }

    public init() {}
}

/// Connection ids are the node's own (one per accepted socket).
typealias ConnectionID = UInt64

struct ConnectionAdmission {
    enum Decision: Equatable {
        /// Serve the new connection; close `evicting` first to make room.
        case admitted(evicting: Eviction?)
        /// Close the new connection at once: every connection it could replace is busy.
        case refused(String)
    }

    struct Eviction: Equatable {
        var id: ConnectionID
        /// Why, for the client's notice and the log.
        var reason: String
    }

    private struct Entry {
        var source: String
        var isAuthenticated: Bool
        /// Arrival order: lower is older.
        var order: UInt64
        var isBusy = false
    }

    let limits: ConnectionLimits
    private var entries: [ConnectionID: Entry] = [:]
    private var unauthenticatedBySource: [String: Int] = [:]
    private(set) var unauthenticatedCount = 0
    private(set) var authenticatedCount = 0
    private var nextOrder: UInt64 = 0

    init(limits: ConnectionLimits) {
        self.limits = limits
    }

    /// True while `id` holds a slot: admitted, and neither evicted nor removed since.
    func holdsSlot(_ id: ConnectionID) -> Bool { entries[id] != nil }

    func isAuthenticated(_ id: ConnectionID) -> Bool { entries[id]?.isAuthenticated ?? false }

    func unauthenticatedCount(from source: String) -> Int { unauthenticatedBySource[source] ?? 0 }

    /// A new connection from `source` (not logged in).
    mutating func admit(_ id: ConnectionID, source: String) -> Decision {
        var eviction: Eviction? = nil
        switch room(forNewcomerFrom: source) {
        case .free: break
        case .unavailable: return .refused(refusal(source))
        case .byEvicting(let victim):
            eviction = victim
            remove(victim.id)
        }
        entries[id] = Entry(source: source, isAuthenticated: false, order: takeOrder())
        unauthenticatedCount += 1
        unauthenticatedBySource[source, default: 0] += 1
        return .admitted(evicting: eviction)
    }

    /// Moves `id` to the logged-in share: before its login is checked (so two logins
    /// cannot both take the last slot), or after a handshake that showed a peer node.
    ///
    /// - Returns: false when the logged-in share is full (or `id` holds no slot).
    mutating func promote(_ id: ConnectionID) -> Bool {
        guard var entry = entries[id] else { return false }
        guard !entry.isAuthenticated else { return true }
        guard authenticatedCount < limits.maxAuthenticated else { return false }
        leaveUnauthenticated(entry.source)
        entry.isAuthenticated = true
        authenticatedCount += 1
        entries[id] = entry
        return true
    }

    /// Moves `id` back to the unauthenticated share: its login failed (`restartingAge`
    /// false: it keeps its age, so failed logins do not make it young again) or it
    /// logged out (true: it is as new as a fresh connection).
    ///
    /// - Returns: a connection to evict when the unauthenticated share (or the source's)
    ///   is now over its limit. If none can go, the share stays over for a while: the
    ///   returning connection held a logged-in slot, so the total is still within limits.
    mutating func demote(_ id: ConnectionID, restartingAge: Bool) -> Eviction? {
        guard var entry = entries[id], entry.isAuthenticated else { return nil }
        var eviction: Eviction? = nil
        if case .byEvicting(let victim) = room(forNewcomerFrom: entry.source, excluding: id) {
            eviction = victim
            remove(victim.id)
        }
        entry.isAuthenticated = false
        if restartingAge { entry.order = takeOrder() }
        authenticatedCount -= 1
        unauthenticatedCount += 1
        unauthenticatedBySource[entry.source, default: 0] += 1
        entries[id] = entry
        return eviction
    }

    /// Marks `id` as answering a request (not evictable) or idle again.
    ///
    /// - Returns: false when `id` no longer holds a slot (it was evicted).
    mutating func setBusy(_ id: ConnectionID, _ isBusy: Bool) -> Bool {
        guard entries[id] != nil else { return false }
        entries[id]!.isBusy = isBusy
        return true
    }

    /// Frees the slot of a connection that closed (or was evicted).
    mutating func remove(_ id: ConnectionID) {
        guard let entry = entries.removeValue(forKey: id) else { return }
        if entry.isAuthenticated {
            authenticatedCount -= 1
        } else {
            leaveUnauthenticated(entry.source)
        }
    }

    // MARK: Choosing whom to evict

    private enum Room {
        case free
        case byEvicting(Eviction)
        /// Room is needed and every connection that could give it up is busy.
        case unavailable
    }

    private func room(forNewcomerFrom source: String, excluding excluded: ConnectionID? = nil) -> Room {
        if unauthenticatedCount(from: source) >= limits.maxUnauthenticatedPerSource {
            let candidates = idleUnauthenticated(excluding: excluded).filter { $0.value.source == source }
            guard let oldest = candidates.min(by: { $0.value.order < $1.value.order }) else { return .unavailable }
            return .byEvicting(
                Eviction(
                    id: oldest.key,
                    reason:
                        "node busy: connection limit (\(limits.maxUnauthenticatedPerSource) connections from \(source) "
                        + "have not logged in; the one waiting longest is closed to make room)"))
        }
        if unauthenticatedCount >= limits.maxUnauthenticated {
            let candidates = idleUnauthenticated(excluding: excluded)
            let chosen = candidates.min { a, b in
                let countA = unauthenticatedCount(from: a.value.source)
                let countB = unauthenticatedCount(from: b.value.source)
                return countA != countB ? countA > countB : a.value.order < b.value.order
            }
            guard let chosen else { return .unavailable }
            return .byEvicting(
                Eviction(
                    id: chosen.key,
                    reason:
                        "node busy: connection limit (\(limits.maxUnauthenticated) connections have not logged in; "
                        + "one from the busiest source, waiting longest, is closed to make room)"))
        }
        return .free
    }

    private func idleUnauthenticated(excluding excluded: ConnectionID?) -> [(key: ConnectionID, value: Entry)] {
        entries.filter { !$0.value.isAuthenticated && !$0.value.isBusy && $0.key != excluded }.map {
            ($0.key, $0.value)
        }
    }

    private func refusal(_ source: String) -> String {
        unauthenticatedCount(from: source) >= limits.maxUnauthenticatedPerSource
            ? "all \(unauthenticatedCount(from: source)) connections from \(source) that have not logged in are busy"
            : "all \(unauthenticatedCount) connections that have not logged in are busy"
    }

    private mutating func leaveUnauthenticated(_ source: String) {
        unauthenticatedCount -= 1
        let left = (unauthenticatedBySource[source] ?? 1) - 1
        unauthenticatedBySource[source] = left > 0 ? left : nil
    }

    private mutating func takeOrder() -> UInt64 {
        nextOrder += 1
        return nextOrder
    }
}
