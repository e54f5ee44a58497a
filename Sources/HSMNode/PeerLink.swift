// The node's client side towards one peer node: mutual TLS with the node's own
// certificate, a few reused connections, and every payload sealed under the cluster key
// so records never cross in plaintext even inside TLS.

import CloudHSMCore
import Foundation
import OpenSSLKit

/// The cluster-wide AES-256 key that seals peer messages.
public enum ClusterKey {
    public static let length = 32

    /// Reads DIR/cluster.key-style files: 32 raw bytes or 64 hex digits (a trailing
    /// newline is allowed). Refuses files that group or others can read (SecretFile).
    public static func load(path: String) throws -> [UInt8] {
        let bytes = try SecretFile.read(path, what: "the cluster key")
        if bytes.count == length { return bytes }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.utf8.count == 2 * length {
            var key: [UInt8] = []
            var index = text.startIndex
            while index < text.endIndex {
                let next = text.index(index, offsetBy: 2)
                guard let byte = UInt8(text[index..<next], radix: 16) else { break }
                key.append(byte)
                index = next
            }
            if key.count == length { return key }
        }
        throw StoreError("the cluster key \(path) must hold 32 bytes (raw) or 64 hex digits")
    }
}

/// Seals and opens peer payloads. The additional data binds each payload to its
/// operation, its direction and the cluster id, so nothing can be replayed as another
/// kind of message or into another cluster.
struct PeerEnvelope: Sendable {
    let key: [UInt8]
    let clusterID: String
    let context: CryptoContext

    /// v2: users by id, keys owned by ids, failed-login logs. A node of the previous
    /// format cannot open these (nor these its), instead of misreading them.
    private func additionalData(operation: UInt8) -> [UInt8] {
        Array("cloudhsm-peer-v2".utf8) + [operation] + Array(clusterID.utf8)
    }

    func seal(_ payload: [UInt8], operation: UInt8) throws -> [UInt8] {
        try AESGCM.seal(
            plaintext: payload, key: key, additionalData: additionalData(operation: operation), context: context)
    }

    func open(_ sealed: [UInt8], operation: UInt8) throws -> [UInt8] {
        try AESGCM.open(sealed, key: key, additionalData: additionalData(operation: operation), context: context)
    }
}

/// The CN a node certificate carries: `hsm-node-N`.
func nodeID(fromSubject subject: String?) -> UInt8? {
    guard let subject else { return nil }
    // X509_NAME_oneline: "/O=.../CN=hsm-node-1"; the CN is the last such field.
    guard let range = subject.range(of: "/CN=hsm-node-", options: .backwards) else { return nil }
    let digits = subject[range.upperBound...].prefix { $0 != "/" }
    guard let id = UInt8(digits), id <= 15, String(id) == digits else { return nil }
    return id
}

public struct PeerAddress: Equatable, Sendable {
    public var id: UInt8
    public var host: String
    public var port: UInt16

    public init(id: UInt8, host: String, port: UInt16) {
        self.id = id
        self.host = host
        self.port = port
    }
}

/// Connections to one peer. Thread-safe: each call takes a connection of its own.
final class PeerLink: @unchecked Sendable {
    let address: PeerAddress
    private let tls: TLSContext
    private let envelope: PeerEnvelope
    private let connectTimeoutMilliseconds: Int
    private let ioTimeoutMilliseconds: Int
    static let maximumIdle = 4
    /// After a connect that failed slowly, calls that may fail fast do so for this long.
    static let failFastSeconds = 1.0
    static let slowConnectSeconds = 0.2

    // Guarded by `lock`.
    private let lock = NSLock()
    private var idle: [TLSConnection] = []
    private var requestID: UInt32 = 0
    private var downUntil: TimeInterval = 0

    init(
        address: PeerAddress, tls: TLSContext, envelope: PeerEnvelope, connectTimeoutMilliseconds: Int,
        ioTimeoutMilliseconds: Int
    ) {
        self.address = address
        self.tls = tls
        self.envelope = envelope
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.ioTimeoutMilliseconds = ioTimeoutMilliseconds
    }

    var name: String { "node \(address.id) (\(address.host):\(address.port))" }

    /// Sends one request and reads its answer. A reused connection that turns out closed
    /// (the peer restarted) is replaced once; every peer request may be repeated.
    ///
    /// - Parameter failFast: fail at once while a recent connect to this peer timed out, so
    ///   a hung peer does not cost every request a connect timeout.
    func call(_ request: PeerRequest, failFast: Bool) throws -> PeerResponse {
        let now = ProcessInfo.processInfo.systemUptime
        if failFast, lock.withLock({ now < downUntil }) {
            throw TLSError.io("\(name) was unreachable moments ago")
        }
        if let reused = lock.withLock({ idle.popLast() }) {
            if let response = try? exchange(request, on: reused) { return response }
        }
        let connection: TLSConnection
        do {
            connection = try connect()
        } catch {
            // A refused connect costs nothing, so only a slow failure (a hung or cut-off
            // peer) makes the next calls skip this peer for a moment.
            let end = ProcessInfo.processInfo.systemUptime
            if end - now > Self.slowConnectSeconds { lock.withLock { downUntil = end + Self.failFastSeconds } }
            throw error
        }
        return try exchange(request, on: connection)
    }

    private func connect() throws -> TLSConnection {
        let connection = try TLSConnection.connect(
            host: address.host, port: address.port, context: tls, timeoutMilliseconds: connectTimeoutMilliseconds)
        // The CA signs every node's certificate; the CN says which node answered.
        guard nodeID(fromSubject: connection.peerSubject) == address.id else {
            connection.close()
            throw TLSError.certificateNotTrusted(
                "\(address.host):\(address.port) presented '\(connection.peerSubject ?? "no certificate")', "
                    + "not hsm-node-\(address.id)")
        }
        connection.setTimeout(milliseconds: ioTimeoutMilliseconds)
        return connection
    }

    private func exchange(_ request: PeerRequest, on connection: TLSConnection) throws -> PeerResponse {
        let operation = request.operation.rawValue
        let id = lock.withLock {
            requestID &+= 1
            return requestID
        }
        do {
            let payload = try envelope.seal(request.encodedPayload(), operation: operation)
            try connection.writeFrame(Frame(operation: operation, requestID: id, payload: payload))
            let frame = try connection.readFrame()
            guard frame.operation == operation | Frame.responseBit, frame.requestID == id else {
                throw WireError.invalidValue("\(name) answered a different request")
            }
            let opened: [UInt8]
            do {
                opened = try envelope.open(frame.payload, operation: frame.operation)
            } catch {
                // A node that does not take this one for a peer answers as it answers any
                // client: a plain refusal, which no cluster key opens. Say that, rather
                // than blame the cluster key.
                if let refusal = try? HSMResponse.decode(operation: .nodeInfo, payload: frame.payload),
                    !refusal.code.isSuccess
                {
                    throw PeerRefusal(peer: name, answer: HSMError(refusal.code, refusal.detail))
                }
                throw error
            }
            let response = try PeerResponse.decode(operation: request.operation, payload: opened)
            lock.withLock {
                if idle.count < Self.maximumIdle { idle.append(connection) } else { connection.close() }
            }
            return response
        } catch {
            connection.close()
            throw error
        }
    }

    /// Closes the idle connections.
    func close() {
        let connections = lock.withLock {
            defer { idle.removeAll() }
            return idle
        }
        for connection in connections { connection.close() }
    }
}

/// A peer that answered a peer operation with a plain (unsealed) refusal: it does not
/// list this node among its peers, or not at the address it connected from.
struct PeerRefusal: Error, CustomStringConvertible {
    let peer: String
    let answer: HSMError

    var description: String {
        "\(peer) refused the peer request (\(answer)): does it list this node with --peer, under this node's id?"
    }
}
