// One TLS connection to one node: frames requests, matches responses, and turns every
// transport failure into an `HSMError` with one of the client-side codes (0xe0-0xe3).
// A connection belongs to the process that opened it; after fork the child must open
// its own, because both processes writing one TLS stream corrupts it.

import CloudHSMCore
import Glibc
import OpenSSLKit

/// Not thread-safe: `ClusterClient` lends a connection to one caller at a time.
public final class NodeConnection {
    public let node: NodeAddress
    /// The process that opened the connection.
    public let ownerPID: pid_t
    private let connection: TLSConnection
    private let operationTimeoutMilliseconds: Int
    private var nextRequestID: UInt32 = 1
    /// Set after a transport failure: the stream may hold half a frame or a late answer,
    /// so nothing more is sent on it.
    public private(set) var isBroken = false
    /// Requests answered on this connection, for deciding whether a failure may be a
    /// stale idle connection.
    public private(set) var completedRequests = 0

    private init(node: NodeAddress, connection: TLSConnection, operationTimeoutMilliseconds: Int) {
        self.node = node
        self.ownerPID = getpid()
        self.connection = connection
        self.operationTimeoutMilliseconds = operationTimeoutMilliseconds
    }

    /// Connects and completes the TLS handshake.
    ///
    /// - Throws: `HSMError` with `.nodeUnreachable`, `.tlsFailure` or `.timedOut`.
    public static func open(
        node: NodeAddress, tls: TLSContext, connectTimeoutMilliseconds: Int, operationTimeoutMilliseconds: Int
    ) throws -> NodeConnection {
        let connection: TLSConnection
        do {
            connection = try TLSConnection.connect(
                host: node.host, port: node.port, context: tls, timeoutMilliseconds: connectTimeoutMilliseconds)
        } catch {
            throw mapConnectError(error, node: node, timeout: connectTimeoutMilliseconds)
        }
        connection.setTimeout(milliseconds: operationTimeoutMilliseconds)
        return NodeConnection(
            node: node, connection: connection, operationTimeoutMilliseconds: operationTimeoutMilliseconds)
    }

    /// True when this process opened the connection and it has not failed.
    public var isUsable: Bool { !isBroken && ownerPID == getpid() }

    /// A request written and not yet answered.
    public struct PendingRequest {
        let operation: CloudHSMCore.Operation
        let requestID: UInt32
    }

    /// Sends one request and waits for its answer.
    ///
    /// - Returns: the node's response, whatever its return code.
    /// - Throws: `HSMError` with a client-side code when the node could not be asked or
    ///   did not answer properly; the connection is then broken and closed.
    public func send(_ request: HSMRequest) throws -> HSMResponse {
        try finish(try begin(request))
    }

    /// Writes a request without waiting, so that several nodes can work on one request at
    /// the same time (a login hashes slowly on every node). One request at a time per
    /// connection: `finish` it before the next `begin`.
    public func begin(_ request: HSMRequest) throws -> PendingRequest {
        guard ownerPID == getpid() else {
            throw HSMError(
                .connectionLost, "connection to \(node) belongs to process \(ownerPID), not \(getpid()) (forked)")
        }
        guard !isBroken else { throw HSMError(.connectionLost, "connection to \(node) failed earlier") }
        let requestID = nextRequestID
        nextRequestID = nextRequestID == UInt32.max ? 1 : nextRequestID + 1
        let operation = request.operation
        do {
            try connection.writeFrame(
                Frame(operation: operation.rawValue, requestID: requestID, payload: request.encodedPayload()))
        } catch {
            breakConnection()
            throw Self.mapTransferError(error, node: node, timeout: operationTimeoutMilliseconds)
        }
        return PendingRequest(operation: operation, requestID: requestID)
    }

    /// Waits for the answer to the request `begin` wrote.
    public func finish(_ pending: PendingRequest) throws -> HSMResponse {
        let operation = pending.operation
        let requestID = pending.requestID
        do {
            let frame = try connection.readFrame()
            guard frame.operation == operation.rawValue | Frame.responseBit, frame.requestID == requestID else {
                // A node that rejects a frame answers with what it could parse; take its
                // code if the payload says why, but never trust the stream again.
                let reason =
                    (try? HSMResponse.decode(operation: operation, payload: frame.payload))
                    .map { $0.detail.isEmpty ? $0.code.description : $0.detail } ?? "no reason given"
                throw HSMError(
                    .connectionLost,
                    "\(node) answered operation 0x\(String(frame.operation, radix: 16)) id \(frame.requestID) "
                        + "to request 0x\(String(operation.rawValue, radix: 16)) id \(requestID): \(reason)")
            }
            let response: HSMResponse
            do {
                response = try HSMResponse.decode(operation: operation, payload: frame.payload)
            } catch {
                throw HSMError(.connectionLost, "malformed response from \(node): \(error)")
            }
            completedRequests += 1
            return response
        } catch let error as HSMError {
            breakConnection()
            throw error
        } catch {
            breakConnection()
            throw Self.mapTransferError(error, node: node, timeout: operationTimeoutMilliseconds)
        }
    }

    /// Sends close_notify and closes; only in the process that opened the connection.
    public func close() {
        isBroken = true
        if ownerPID == getpid() { connection.close() } else { connection.abandon() }
    }

    /// Closes the socket without writing anything: for a forked child holding its
    /// parent's connection.
    public func abandon() {
        isBroken = true
        connection.abandon()
    }

    deinit {
        // TLSConnection's own deinit sends close_notify, which in a forked child would
        // write into the parent's stream.
        if ownerPID != getpid() { connection.abandon() }
    }

    private func breakConnection() {
        isBroken = true
        connection.abandon()
    }

    static func mapConnectError(_ error: Error, node: NodeAddress, timeout: Int) -> HSMError {
        guard let tls = error as? TLSError else { return HSMError(.nodeUnreachable, "connect to \(node): \(error)") }
        switch tls {
        case .connectionRefused(let what):
            // OpenSSLKit passes the bare "connect to HOST:PORT"; say what happened.
            return HSMError(.nodeUnreachable, what.contains("refused") ? what : "\(what): Connection refused")
        case .certificateNotTrusted, .handshakeFailed: return HSMError(.tlsFailure, "\(node): \(tls)")
        case .timedOut: return HSMError(.timedOut, "connect to \(node): no answer within \(timeout) ms")
        case .closed: return HSMError(.tlsFailure, "\(node) closed the connection during the TLS handshake")
        case .io(let what):
            if what.hasSuffix("timed out") { return HSMError(.timedOut, what) }
            return HSMError(.nodeUnreachable, what)
        }
    }

    static func mapTransferError(_ error: Error, node: NodeAddress, timeout: Int) -> HSMError {
        guard let tls = error as? TLSError else {
            return HSMError(.connectionLost, "\(node): \(error)")
        }
        switch tls {
        case .timedOut: return HSMError(.timedOut, "\(node) did not answer within \(timeout) ms")
        case .closed: return HSMError(.connectionLost, "\(node) closed the connection")
        case .io(let what): return HSMError(.connectionLost, "\(node): \(what)")
        case .connectionRefused(let what): return HSMError(.nodeUnreachable, what)
        case .certificateNotTrusted, .handshakeFailed: return HSMError(.tlsFailure, "\(node): \(tls)")
        }
    }
}
