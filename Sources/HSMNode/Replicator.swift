// Replication between nodes: pushes new records to the peers before a change is
// answered, pulls what this node lacks from every peer at start-up and every few seconds
// (on threads of its own, so crypto never waits for it), asks the peers about a user
// before it is deleted, and answers peers' requests.
// docs/architecture.md ("Replication") describes the protocol.

import CloudHSMCore
import Foundation
import OpenSSLKit

/// Which records to fetch from a peer: those it holds in a newer version than this node,
/// or that this node lacks. Pure, so the merge rule is unit-tested without a network.
enum SyncPlan {
    static func wanted(local: PeerInventory, remote: PeerInventory) -> (keys: [KeyHandle], users: [UserID]) {
        let keys = remote.keys.filter { handle, stamp in local.keys[handle].map { $0 < stamp } ?? true }
        let users = remote.users.filter { id, stamp in local.users[id].map { $0 < stamp } ?? true }
        return (keys.keys.sorted(), users.keys.sorted())
    }
}

public final class Replicator: ReplicationHook, @unchecked Sendable {
    public let minNodes: Int
    let state: NodeState
    private let links: [UInt8: PeerLink]
    private let envelope: PeerEnvelope
    private let syncInterval: TimeInterval
    /// The longest a change waits for its pushes: a hung peer (connected, not answering)
    /// must not hold a client's request for the whole I/O timeout.
    private let pushTimeout: TimeInterval
    /// Records per fetch request, so a reply stays far below the frame limit.
    static let fetchBatch = 64

    /// Per peer: its handle counter at the end of the last complete sync, and whether the
    /// last attempt reached it (to log changes, not every failure). Guarded by `lock`.
    private let lock = NSLock()
    private var syncedCounter: [UInt8: UInt64] = [:]
    private var reachable: [UInt8: Bool] = [:]
    private var stopped = false

    /// - Parameters:
    ///   - tls: a client context with this node's certificate (peers require one).
    ///   - clusterKey: the 32-byte cluster key that seals every peer payload.
    public init(
        state: NodeState, peers: [PeerAddress], clusterKey: [UInt8], tls: TLSContext, minNodes: Int,
        syncInterval: TimeInterval, connectTimeoutMilliseconds: Int, context: CryptoContext
    ) throws {
        guard clusterKey.count == ClusterKey.length else { throw StoreError("the cluster key must be 32 bytes") }
        guard !peers.contains(where: { $0.id == state.nodeID }) else {
            throw StoreError("node \(state.nodeID) is listed as its own peer")
        }
        guard (1...(peers.count + 1)).contains(minNodes) else {
            throw StoreError("min nodes \(minNodes) is not in 1...\(peers.count + 1) (this node and its peers)")
        }
        self.state = state
        self.minNodes = minNodes
        self.syncInterval = syncInterval
        self.pushTimeout = 2 * Double(connectTimeoutMilliseconds) / 1000
        let envelope = PeerEnvelope(key: clusterKey, clusterID: state.clusterID, context: context)
        self.envelope = envelope
        var links: [UInt8: PeerLink] = [:]
        for peer in peers {
            links[peer.id] = PeerLink(
                address: peer, tls: tls, envelope: envelope, connectTimeoutMilliseconds: connectTimeoutMilliseconds,
                ioTimeoutMilliseconds: max(5000, connectTimeoutMilliseconds))
        }
        self.links = links
        state.metrics.registerPeers(peers.map(\.id))
    }

    public var peerIDs: [UInt8] { links.keys.sorted() }

    /// Hooks into the node, syncs once with every peer (in parallel, bounded by the
    /// connect timeout for peers that are down), then keeps syncing in the background.
    public func start() {
        state.replication = self
        let group = DispatchGroup()
        for link in links.values {
            group.enter()
            let thread = Thread { [self] in
                syncLogged(link)
                group.leave()
            }
            thread.start()
        }
        group.wait()
        for link in links.values {
            let thread = Thread { [self] in
                while !lock.withLock({ stopped }) {
                    Thread.sleep(forTimeInterval: syncInterval)
                    syncLogged(link)
                }
            }
            thread.name = "hsm-sync-\(link.address.id)"
            thread.start()
        }
    }

    public func stop() {
        lock.withLock { stopped = true }
        for link in links.values { link.close() }
    }

    // MARK: Pushing (ReplicationHook)

    func push(_ records: PeerRecords, waitFor needed: Int?) -> Int {
        let tally = PushTally()
        let targets = Array(links.values)
        guard !targets.isEmpty else { return 0 }
        for link in targets {
            let thread = Thread {
                var stored = false
                do {
                    let response = try link.call(.pushRecords(records), failFast: true)
                    stored = response.code.isSuccess
                    if !stored { logLine("push to \(link.name) refused: \(response.code) \(response.detail)") }
                } catch {
                    // The peer catches up at its next sync; nothing else to do here.
                }
                if !stored { self.state.metrics.recordPushFailure(peer: link.address.id) }
                tally.finished(stored: stored)
            }
            thread.start()
        }
        return tally.wait(total: targets.count, needed: needed, timeout: pushTimeout)
    }

    func lookUpMissing(_ handle: KeyHandle) -> MissingKey {
        let creator = UInt8(handle & 0xF)
        guard let link = links[creator] else { return .absent }
        do {
            let response = try link.call(.fetchRecords(keys: [handle], users: []), failFast: true)
            guard response.code.isSuccess, case .records(let records) = response.body else {
                throw HSMError(response.code, response.detail)
            }
            return records.keys.first { $0.handle == handle }.map(MissingKey.record) ?? .absent
        } catch {
            // The creator cannot say. A handle it had already given out at our last full
            // sync with it, and that was not a token key then, is not one now.
            if let counter = lock.withLock({ syncedCounter[creator] }), handle >> 4 <= counter { return .absent }
            return .notReplicated
        }
    }

    func activity(of user: UserID) -> [UInt8: UserActivity] {
        let answers = Answers<UserActivity>()
        let targets = Array(links.values)
        for link in targets {
            let thread = Thread {
                var activity: UserActivity? = nil
                do {
                    let response = try link.call(.userActivity(user), failFast: true)
                    if response.code.isSuccess, case .activity(let answer) = response.body { activity = answer }
                } catch {
                    // A peer that cannot be asked cannot refuse; see NodeState.deleteUser.
                }
                answers.add(link.address.id, activity)
            }
            thread.start()
        }
        return answers.wait(total: targets.count, timeout: pushTimeout)
    }

    // MARK: Pulling

    private func syncLogged(_ link: PeerLink) {
        let startedAt = state.metrics.wallClock()
        do {
            let pulled = try sync(with: link)
            state.metrics.recordSync(peer: link.address.id, startedAt: startedAt, pulled: pulled)
            let wasReachable = lock.withLock { reachable.updateValue(true, forKey: link.address.id) }
            if wasReachable != true { logLine("synced with peer \(link.name)") }
            if pulled > 0 { logLine("pulled \(pulled) newer record(s) from peer \(link.name)") }
        } catch {
            state.metrics.recordSyncFailure(peer: link.address.id)
            let wasReachable = lock.withLock { reachable.updateValue(false, forKey: link.address.id) }
            if wasReachable != false { logLine("cannot sync with peer \(link.name): \(error)") }
        }
    }

    /// Compares inventories with one peer and fetches the difference.
    ///
    /// - Returns: how many records were newer than this node's.
    @discardableResult
    func sync(with link: PeerLink) throws -> Int {
        let listed = try link.call(.listVersions, failFast: false)
        guard listed.code.isSuccess, case .inventory(let remote) = listed.body else {
            throw HSMError(listed.code, "listVersions: \(listed.detail)")
        }
        var pulled = try state.store.merge(loginFailures: remote.loginFailures)
        let wanted = SyncPlan.wanted(local: try state.inventory(), remote: remote)
        var keys = wanted.keys[...]
        var users = wanted.users[...]
        while !keys.isEmpty || !users.isEmpty {
            let keyBatch = Array(keys.prefix(Self.fetchBatch))
            keys = keys.dropFirst(keyBatch.count)
            let userBatch = Array(users.prefix(Self.fetchBatch - keyBatch.count))
            users = users.dropFirst(userBatch.count)
            let fetched = try link.call(.fetchRecords(keys: keyBatch, users: userBatch), failFast: false)
            guard fetched.code.isSuccess, case .records(let records) = fetched.body else {
                throw HSMError(fetched.code, "fetchRecords: \(fetched.detail)")
            }
            pulled += try state.applyReplicated(records)
        }
        lock.withLock { syncedCounter[link.address.id] = remote.handleCounter }
        return pulled
    }

    // MARK: Serving peers

    /// True when `id` is one of this node's configured peers.
    func isPeer(_ id: UInt8) -> Bool { links[id] != nil }

    /// Answers one peer frame; nil when the payload does not open under the cluster key
    /// (a node of another cluster, or a different cluster.key): the caller closes.
    func answer(_ frame: Frame, from peerID: UInt8) -> Frame? {
        let plaintext: [UInt8]
        do {
            plaintext = try envelope.open(frame.payload, operation: frame.operation)
        } catch {
            logLine("peer node \(peerID) sent a message that does not open under the cluster key; closing")
            return nil
        }
        let response: PeerResponse
        do {
            response = try handle(try PeerRequest.decode(operation: frame.operation, payload: plaintext))
        } catch let error as WireError {
            response = .failure(HSMError(.invalidRequest, error.description))
        } catch let error as HSMError {
            response = .failure(error)
        } catch {
            response = .failure(HSMError(.internalError, "\(error)"))
        }
        let operation = frame.operation | Frame.responseBit
        guard let sealed = try? envelope.seal(response.encodedPayload(), operation: operation) else { return nil }
        return Frame(operation: operation, requestID: frame.requestID, payload: sealed)
    }

    private func handle(_ request: PeerRequest) throws -> PeerResponse {
        switch request {
        case .listVersions:
            return PeerResponse(body: .inventory(try state.inventory()))
        case .fetchRecords(let keys, let users):
            guard keys.count + users.count <= 4 * Self.fetchBatch else {
                throw HSMError(.invalidArgument, "at most \(4 * Self.fetchBatch) records per fetch")
            }
            return PeerResponse(body: .records(try state.exportRecords(keys: keys, users: users)))
        case .pushRecords(let records):
            try state.applyReplicated(records)
            return PeerResponse(body: .stored)
        case .userActivity(let user):
            return PeerResponse(body: .activity(state.activity(of: user)))
        }
    }
}

/// Counts the answers of one push and wakes its caller when enough are in.
private final class PushTally: @unchecked Sendable {
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var stored = 0
    private var ended = 0

    func finished(stored wasStored: Bool) {
        condition.lock()
        if wasStored { stored += 1 }
        ended += 1
        condition.broadcast()
        condition.unlock()
    }

    func wait(total: Int, needed: Int?, timeout: TimeInterval) -> Int {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while ended < total {
            if let needed, stored >= needed { break }
            if !condition.wait(until: deadline) { break }
        }
        return stored
    }
}

/// Collects the answers of one question put to every peer, until all answered or the
/// deadline passed.
private final class Answers<Answer>: @unchecked Sendable {
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var answers: [UInt8: Answer] = [:]
    private var ended = 0

    func add(_ peer: UInt8, _ answer: Answer?) {
        condition.lock()
        if let answer { answers[peer] = answer }
        ended += 1
        condition.broadcast()
        condition.unlock()
    }

    func wait(total: Int, timeout: TimeInterval) -> [UInt8: Answer] {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while ended < total {
            if !condition.wait(until: deadline) { break }
        }
        return answers
    }
}
