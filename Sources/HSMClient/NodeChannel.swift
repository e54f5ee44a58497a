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
    func exchange(_ request: HSMRequest, credentials: Credentials?, opener: (NodeAddress) throws -> NodeConnection)
        -> Exchange
    {
        state.withLock { state -> Exchange in
            // A stale idle connection (node restarted) fails on first use; an idempotent
            // request is then worth one more try on a fresh connection.
            for attempt in 0..<2 {
                let ready = Self.prepare(&state, node: node, request: request, credentials: credentials, opener: opener)
                let connection: NodeConnection
                let isFresh: Bool
                switch ready {
                case .failure(let error): return Exchange(result: .failure(error), wasSent: false)
                case .success(let prepared): (connection, isFresh) = prepared
                }
                do {
                    let response = try connection.send(request)
                    if response.code.isSuccess {
                        switch request {
                        case .login(let role, let user, let password):
                            state.loggedInAs = Credentials(role: role, user: user, password: password)
                        case .logout:
                            state.loggedInAs = nil
                        default: break
                        }
                        return Exchange(result: .success(response), wasSent: true)
                    }
                    return Exchange(result: .failure(HSMError(response.code, response.detail)), wasSent: true)
                } catch {
                    let hsmError = error as? HSMError ?? HSMError(.connectionLost, "\(error)")
                    state.connection = nil
                    state.loggedInAs = nil
                    let retry =
                        attempt == 0 && !isFresh && Self.mayRepeatOnFreshConnection(request)
                        && hsmError.code == .connectionLost
                    if !retry { return Exchange(result: .failure(hsmError), wasSent: true) }
                }
            }
            return Exchange(result: .failure(HSMError(.connectionLost, "\(node): retry failed")), wasSent: true)
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
        opener: (NodeAddress) throws -> NodeConnection
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
