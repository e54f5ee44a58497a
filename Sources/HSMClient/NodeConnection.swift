// One TLS connection to one node: frames requests, matches responses, and turns every
// transport failure into an `HSMError` with one of the client-side codes (0xe0-0xe3).
// A node's notice (a frame with request id 0, sent before it closes the connection) ends
// the connection with the node's own code and reason. A connection belongs to the
// process that opened it; after fork the child must open its own, because both processes
// writing one TLS stream corrupts it.

import CloudHSMCore
import Glibc
import OpenSSLKit

/// Not thread-safe: `ClusterClient` lends a connection to one caller at a time.
public final class NodeConnection {
    public let node: NodeAddress
    /// The process that opened the connection, for messages.
    public let ownerPID: pid_t
    /// `ForkGeneration` when the connection opened: another value means a forked child.
    private let ownerGeneration: UInt64
    private let connection: TLSConnection
    private let operationTimeoutMilliseconds: Int
    /// The socket's read and write timeout now; changed only when a request asks for
    /// another, since each change is two system calls.
    private var socketTimeoutMilliseconds: Int
    private var nextRequestID: UInt32 = 1
    /// Set after a transport failure: the stream may hold half a frame or a late answer,
    /// so nothing more is sent on it.
    public private(set) var isBroken = false

    private init(node: NodeAddress, connection: TLSConnection, operationTimeoutMilliseconds: Int) {
        self.node = node
        self.ownerPID = getpid()
        self.ownerGeneration = ForkGeneration.current
        self.connection = connection
        self.operationTimeoutMilliseconds = operationTimeoutMilliseconds
        self.socketTimeoutMilliseconds = operationTimeoutMilliseconds
    }

    /// Connects and completes the TLS handshake, each within `connectTimeoutMilliseconds`.
    ///
    /// - Throws: `HSMError` with `.nodeUnreachable`, `.tlsFailure`, `.connectionLost` (the
    ///   node closed the connection during the handshake) or `.timedOut`.
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
    public var isUsable: Bool { !isBroken && isOwnedHere }

    /// Whether this process opened the connection (not a forked child holding a copy).
    private var isOwnedHere: Bool { ownerGeneration == ForkGeneration.current }

    /// A request written and not yet answered.
    public struct PendingRequest {
        let operation: CloudHSMCore.Operation
        let requestID: UInt32
        /// How long the answer may take, for the timeout's message.
        let timeoutMilliseconds: Int
        /// Monotonic milliseconds when the request was written.
        let sentAt: UInt64
    }

    /// Sends one request and waits for its answer.
    ///
    /// - Parameter timeoutMilliseconds: how long writing and each read may wait; nil is the
    ///   configuration's operation timeout.
    /// - Returns: the node's response, whatever its return code.
    /// - Throws: `HSMError` with a client-side code when the node could not be asked or
    ///   did not answer properly, `NodeNotice` when the node closed the connection with a
    ///   reason; the connection is then broken and closed.
    public func send(_ request: HSMRequest, timeoutMilliseconds: Int? = nil) throws -> HSMResponse {
        try finish(try begin(request, timeoutMilliseconds: timeoutMilliseconds))
    }

    /// Writes a request without waiting, so that several nodes can work on one request at
    /// the same time (a login hashes slowly on every node). One request at a time per
    /// connection: `finish` it before the next `begin`.
    public func begin(_ request: HSMRequest, timeoutMilliseconds: Int? = nil) throws -> PendingRequest {
        guard isOwnedHere else {
            throw HSMError(
                .connectionLost, "connection to \(node) belongs to process \(ownerPID), not \(getpid()) (forked)")
        }
        guard !isBroken else { throw HSMError(.connectionLost, "connection to \(node) failed earlier") }
        let requestID = nextRequestID
        nextRequestID = nextRequestID == UInt32.max ? 1 : nextRequestID + 1
        let operation = request.operation
        let timeout = max(1, timeoutMilliseconds ?? operationTimeoutMilliseconds)
        if timeout != socketTimeoutMilliseconds {
            connection.setTimeout(milliseconds: timeout)
            socketTimeoutMilliseconds = timeout
        }
        let sentAt = monotonicNow()
        do {
            try connection.writeFrame(
                Frame(operation: operation.rawValue, requestID: requestID, payload: request.encodedPayload()))
        } catch {
            breakConnection()
            throw Self.mapTransferError(error, node: node, timeout: timeout)
        }
        return PendingRequest(operation: operation, requestID: requestID, timeoutMilliseconds: timeout, sentAt: sentAt)
    }

    /// Waits for the answer to the request `begin` wrote.
    public func finish(_ pending: PendingRequest) throws -> HSMResponse {
        let operation = pending.operation
        let requestID = pending.requestID
        do {
            let frame = try connection.readFrame()
            if frame.requestID == 0 && frame.isResponse { throw Self.notice(frame, node: node) }
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
            return response
        } catch let error as HSMError {
            breakConnection()
            throw error
        } catch let notice as NodeNotice {
            breakConnection()
            throw notice
        } catch {
            breakConnection()
            throw Self.mapTransferError(error, node: node, timeout: pending.timeoutMilliseconds)
        }
    }

    /// What a notice frame says: the node's code and reason, or, when its payload is no
    /// failure response, that the node closed the connection without a readable reason.
    static func notice(_ frame: Frame, node: NodeAddress) -> NodeNotice {
        // Only a failure's code and detail are read, so any operation decodes it.
        if let response = try? HSMResponse.decode(operation: .nodeInfo, payload: frame.payload),
            !response.code.isSuccess
        {
            let detail = response.detail.isEmpty ? "\(node) closed the connection" : response.detail
            return NodeNotice(error: HSMError(response.code, detail))
        }
        return NodeNotice(
            error: HSMError(.connectionLost, "\(node) closed the connection with an unreadable notice"))
    }

    /// Sends close_notify and closes; only in the process that opened the connection.
    public func close() {
        isBroken = true
        if isOwnedHere { connection.close() } else { connection.abandon() }
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
        if !isOwnedHere { connection.abandon() }
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
        case .certificateNotTrusted:
            return HSMError(.tlsFailure, "\(node): \(tls) (is it signed by the configuration's trust_anchor?)")
        case .handshakeFailed(let why) where closedWithoutAlert(why):
            return closedDuringHandshake(node)
        case .handshakeFailed: return HSMError(.tlsFailure, "\(node): \(tls)")
        case .timedOut: return HSMError(.timedOut, "connect to \(node): no answer within \(timeout) ms")
        case .closed: return closedDuringHandshake(node)
        case .io(let what):
            if what.hasSuffix("timed out") { return HSMError(.timedOut, what) }
            return HSMError(.nodeUnreachable, what)
        }
    }

    /// A node that closes during the handshake sends no alert: it is at its connection
    /// limit, stopping, or not a node at all. Nothing says the certificate is wrong.
    static func closedDuringHandshake(_ node: NodeAddress) -> HSMError {
        HSMError(
            .connectionLost,
            "\(node) closed the connection during the TLS handshake (no TLS alert: the node may be at its "
                + "connection limit or stopping)")
    }

    /// OpenSSLKit's texts for a handshake that ended in EOF or a reset rather than an alert
    /// or a verification failure.
    static func closedWithoutAlert(_ why: String) -> Bool {
        why.contains("unexpected eof") || why.contains("peer closed the connection")
            || why.contains("Connection reset")
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

/// A node's notice (contract C1): an unsolicited frame with request id 0 and the response
/// bit, sent before the node closes the connection. The request in flight was not acted
/// on; a throttled (0xbb) notice means the node is full ("node busy: connection limit"),
/// not broken.
struct NodeNotice: Error, Equatable, Sendable, CustomStringConvertible {
    let error: HSMError

    var description: String { error.description }
}
