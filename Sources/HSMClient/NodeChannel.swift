// Everything the client keeps for one node: its connection and who is logged in on it.
// Today one connection per node; the pool of several (least outstanding requests) grows
// here without changing ClusterClient's callers.

import CloudHSMCore
import Glibc
import OpenSSLKit
import Synchronization

final class NodeChannel: Sendable {
    let node: NodeAddress
    private let state = Mutex(State())

    struct State {
        var connection: NodeConnection?
        /// Who the connection is logged in as; nil on a fresh or logged-out connection.
        var loggedInAs: Credentials?
    }

    /// The result of one exchange and whether the request reached the node (false when
    /// connecting or logging in failed, so another node may safely be tried instead).
    struct Exchange {
        var result: Result<HSMResponse, HSMError>
        var wasSent: Bool
    }

    init(node: NodeAddress) {
        self.node = node
    }

    /// Sends `request` on this node's connection, opening it first when needed and, when
    /// `credentials` are given and the connection is not logged in, logging in first (a
    /// reconnect after a dropped connection logs in again).
    ///
    /// The channel's lock is held for the whole exchange: one request at a time per
    /// connection, as the protocol requires.
    func exchange(_ request: HSMRequest, credentials: Credentials?, opener: Opener) -> Exchange {
        state.withLock { state -> Exchange in
            let started = Self.start(&state, node: node, request: request, credentials: credentials, opener: opener)
            return Self.complete(
                &state, started, node: node, request: request, credentials: credentials, opener: opener)
        }
    }

    typealias Opener = (NodeAddress) throws -> NodeConnection

    /// Sends `request` to every channel at once: writes it on every connection before
    /// waiting for the first answer, so the nodes work in parallel (a login's slow password
    /// hash costs the slowest node's time, not the sum) without a thread.
    ///
    /// Holds the channels' locks together, always taken in array order, while single
    /// exchanges hold one lock only: no deadlock.
    static func exchangeAll(
        _ channels: [NodeChannel], _ request: HSMRequest, credentials: Credentials?, opener: Opener
    ) -> [Exchange] {
        var results: [Exchange?] = Array(repeating: nil, count: channels.count)
        func level(_ index: Int) {
            guard index < channels.count else { return }
            let channel = channels[index]
            channel.state.withLock { state in
                let started = start(
                    &state, node: channel.node, request: request, credentials: credentials, opener: opener)
                level(index + 1)
                results[index] = complete(
                    &state, started, node: channel.node, request: request, credentials: credentials, opener: opener)
            }
        }
        level(0)
        return results.map { $0! }
    }

    /// Where an exchange stands after its request was (or could not be) written.
    enum Started {
        case finished(Exchange)
        case pending(NodeConnection, NodeConnection.PendingRequest, isFresh: Bool)
    }

    /// Opens (and logs in) as needed and writes the request.
    private static func start(
        _ state: inout State, node: NodeAddress, request: HSMRequest, credentials: Credentials?, opener: Opener
    ) -> Started {
        let connection: NodeConnection
        let isFresh: Bool
        switch prepare(&state, node: node, request: request, credentials: credentials, opener: opener) {
        case .failure(let error): return .finished(Exchange(result: .failure(error), wasSent: false))
        case .success(let prepared): (connection, isFresh) = prepared
        }
        do {
            return .pending(connection, try connection.begin(request), isFresh: isFresh)
        } catch {
            state.connection = nil
            state.loggedInAs = nil
            let hsmError = error as? HSMError ?? HSMError(.connectionLost, "\(error)")
            // Nothing reached the node when a reused connection failed to write.
            if !isFresh && mayRepeatOnFreshConnection(request) {
                return start(&state, node: node, request: request, credentials: credentials, opener: opener)
            }
            return .finished(Exchange(result: .failure(hsmError), wasSent: true))
        }
    }

    /// Reads the answer and records what it changed (who is logged in).
    private static func complete(
        _ state: inout State, _ started: Started, node: NodeAddress, request: HSMRequest, credentials: Credentials?,
        opener: Opener, mayRetry: Bool = true
    ) -> Exchange {
        guard case .pending(let connection, let pending, let isFresh) = started else {
            if case .finished(let exchange) = started { return exchange }
            fatalError("unreachable")
        }
        do {
            let response = try connection.finish(pending)
            guard response.code.isSuccess else {
                return Exchange(result: .failure(HSMError(response.code, response.detail)), wasSent: true)
            }
            switch request {
            case .login(let role, let user, let password):
                state.loggedInAs = Credentials(role: role, user: user, password: password)
            case .logout:
                state.loggedInAs = nil
            default: break
            }
            return Exchange(result: .success(response), wasSent: true)
        } catch {
            let hsmError = error as? HSMError ?? HSMError(.connectionLost, "\(error)")
            state.connection = nil
            state.loggedInAs = nil
            // A stale idle connection (the node restarted or closed it) fails on first
            // use; some requests are worth one more try on a fresh connection.
            guard mayRetry, !isFresh, hsmError.code == .connectionLost, mayRepeatOnFreshConnection(request) else {
                return Exchange(result: .failure(hsmError), wasSent: true)
            }
            let again = start(&state, node: node, request: request, credentials: credentials, opener: opener)
            return complete(
                &state, again, node: node, request: request, credentials: credentials, opener: opener, mayRetry: false)
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

    /// A usable connection, logged in as `credentials` when given; `isFresh` when it was
    /// opened just now.
    private static func prepare(
        _ state: inout State, node: NodeAddress, request: HSMRequest, credentials: Credentials?,
        opener: Opener
    ) -> Result<(NodeConnection, Bool), HSMError> {
        if let existing = state.connection, !existing.isUsable {
            // Broken, or inherited across fork: never write on it.
            existing.abandon()
            state.connection = nil
            state.loggedInAs = nil
        }
        var isFresh = false
        if state.connection == nil {
            do {
                state.connection = try opener(node)
                isFresh = true
            } catch {
                return .failure(error as? HSMError ?? HSMError(.nodeUnreachable, "\(node): \(error)"))
            }
        }
        let connection = state.connection!
        var needsLogin = false
        switch request {
        case .login, .logout: break
        default: needsLogin = credentials != nil && state.loggedInAs == nil
        }
        if needsLogin, let credentials {
            let login = HSMRequest.login(role: credentials.role, user: credentials.user, password: credentials.password)
            do {
                let response = try connection.send(login)
                guard response.code.isSuccess else {
                    let detail = response.detail.isEmpty ? "" : ": \(response.detail)"
                    return .failure(HSMError(response.code, "logging in again as \(credentials) failed\(detail)"))
                }
                state.loggedInAs = credentials
            } catch {
                state.connection = nil
                return .failure(error as? HSMError ?? HSMError(.connectionLost, "\(error)"))
            }
        }
        return .success((connection, isFresh))
    }

    /// Who the connection is logged in as, if it is open and this process's.
    var loggedInAs: Credentials? {
        state.withLock { state in
            guard let connection = state.connection, connection.isUsable else { return nil }
            return state.loggedInAs
        }
    }

    /// Drops a connection opened by another process (the parent, before fork) without
    /// writing on it; the child opens its own on next use.
    func forgetInheritedConnection() {
        state.withLock { state in
            if let connection = state.connection, connection.ownerPID != getpid() {
                connection.abandon()
                state.connection = nil
                state.loggedInAs = nil
            }
        }
    }

    func close() {
        state.withLock { state in
            state.connection?.close()
            state.connection = nil
            state.loggedInAs = nil
        }
    }
}
