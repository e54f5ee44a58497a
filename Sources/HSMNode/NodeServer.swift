// The node's network face: TLS 1.3 over TCP, one thread per connection, one request at a
// time per connection. Malformed input gets an "invalid request" answer and a close;
// nothing a client sends can crash the node.

import CloudHSMCore
import Foundation
import OpenSSLKit
import Synchronization

/// Writes one line to stderr. Never given key material or passwords.
func logLine(_ message: String) {
    FileHandle.standardError.write(Data(("hsmd: " + message + "\n").utf8))
}

public final class NodeServer: @unchecked Sendable {
    // The listener, TLS context and handler are set once in init.
    public let handler: RequestHandler
    private let listener: TCPListener
    private let tls: TLSContext
    static let handshakeTimeoutMilliseconds = 10_000
    /// A connection silent this long is closed: clients reconnect when they need to (the
    /// cluster client retries a request that finds its idle connection closed).
    static let idleTimeoutMilliseconds = 600_000
    /// Connections served at once; beyond this new ones are closed at once, so a flood of
    /// clients costs refused connections, not the node (a thread and buffers each).
    static let maximumConnections = 1024
    private let openConnections = Atomic<Int>(0)

    public var port: UInt16 { listener.port }

    /// Answers peer operations (0x40 and up) on connections whose client certificate names
    /// a configured peer node; set once before `serve()`.
    public var replicator: Replicator?

    public init(handler: RequestHandler, host: String, port: UInt16, tls: TLSContext) throws {
        self.handler = handler
        self.tls = tls
        self.listener = try TCPListener(host: host, port: port)
    }

    /// Accepts connections until the listener is closed, each on its own thread.
    public func serve() {
        while true {
            let socket: TCPSocket
            do {
                socket = try listener.accept()
            } catch {
                return  // closed for shutdown
            }
            guard openConnections.wrappingAdd(1, ordering: .relaxed).oldValue < Self.maximumConnections else {
                openConnections.wrappingSubtract(1, ordering: .relaxed)
                logLine("refusing a connection: \(Self.maximumConnections) connections are open")
                socket.close()
                continue
            }
            socket.setKeepAlive()
            let thread = Thread { [self] in
                self.serveConnection(socket)
                self.openConnections.wrappingSubtract(1, ordering: .relaxed)
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    public func stop() {
        listener.close()
    }

    private func serveConnection(_ socket: TCPSocket) {
        let peer = socket.peerDescription
        let connection: TLSConnection
        do {
            connection = try TLSConnection.accept(
                socket, context: tls, timeoutMilliseconds: Self.handshakeTimeoutMilliseconds)
        } catch {
            logLine("connection from \(peer): TLS handshake failed: \(error)")
            socket.close()
            return
        }
        connection.setTimeout(milliseconds: Self.idleTimeoutMilliseconds)
        // The handshake refused any certificate the CA did not sign, so a subject here is
        // trustworthy; tools present none and keep the ordinary operations only.
        var peerNode: UInt8? = nil
        if let replicator, let id = nodeID(fromSubject: connection.peerSubject), replicator.isPeer(id) {
            peerNode = id
        }
        var session = handler.openSession()
        logLine("connection \(session.id) open from \(peer)" + (peerNode.map { " (peer node \($0))" } ?? ""))
        defer {
            handler.closeSession(&session)
            connection.close()
        }
        while true {
            let frame: Frame
            do {
                frame = try connection.readFrame()
            } catch TLSError.closed {
                logLine("connection \(session.id) closed")
                return
            } catch TLSError.timedOut {
                logLine("connection \(session.id) idle for \(Self.idleTimeoutMilliseconds / 1000) s, closing")
                return
            } catch let error as WireError {
                reject(error, operation: 0, requestID: 0, connection, session)
                return
            } catch {
                logLine("connection \(session.id) error: \(error)")
                return
            }
            let response: Frame
            if let peerNode, let replicator, frame.operation >= PeerOperation.listVersions.rawValue,
                !frame.isResponse
            {
                guard let answer = replicator.answer(frame, from: peerNode) else { return }
                do {
                    try connection.writeFrame(answer)
                } catch {
                    logLine("connection \(session.id) error: \(error)")
                    return
                }
                continue
            }
            switch handler.answer(frame, session: &session) {
            case .success(let frame):
                response = frame
            case .failure(let error):
                reject(error, operation: frame.operation, requestID: frame.requestID, connection, session)
                return
            }
            do {
                try connection.writeFrame(response)
            } catch {
                logLine("connection \(session.id) error: \(error)")
                return
            }
        }
    }

    private func reject(
        _ error: WireError, operation: UInt8, requestID: UInt32, _ connection: TLSConnection, _ session: Session
    ) {
        logLine("connection \(session.id) sent a malformed frame (\(error)); closing")
        let response = HSMResponse(code: .invalidRequest, detail: error.description)
        try? connection.writeFrame(
            Frame(operation: operation | Frame.responseBit, requestID: requestID, payload: response.encodedPayload()))
    }

}
