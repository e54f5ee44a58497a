// A small in-process HSM node for the client's tests: real TLS 1.3 on loopback, the real
// wire protocol, keys held in memory with real RSA (so signatures verify), users "cu"/"co"
// with password "pw". It lets the tests check routing, re-login, fork and the tools'
// output without the real hsmd.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMClient

/// Certificates for the fake nodes: a CA and one leaf for 127.0.0.1/localhost.
struct TestPKI {
    let directory: String
    var caPath: String { directory + "/ca.crt" }
    var certificatePath: String { directory + "/node.crt" }
    var keyPath: String { directory + "/node.key" }

    init() throws {
        directory = try temporaryDirectory()
        let script = """
            set -e
            cd '\(directory)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca
            openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj /CN=localhost
            echo 'subjectAltName=IP:127.0.0.1,DNS:localhost' > ext.cnf
            openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out node.crt -days 2 \
                -extfile ext.cnf
            """
        try runProcess("/bin/bash", ["-c", script])
    }
}

@discardableResult
func runProcess(_ executable: String, _ arguments: [String], input: String? = nil, environment: [String: String]? = nil)
    throws -> (status: Int32, output: String)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    // Standard input comes from a file, not a pipe: writing to a pipe whose reader already
    // exited (a tool that stops at a missing configuration) raises SIGPIPE, which would
    // kill the whole test process.
    let inputFile = FileManager.default.temporaryDirectory.appendingPathComponent("stdin-\(UUID().uuidString)")
    try Data((input ?? "").utf8).write(to: inputFile)
    defer { try? FileManager.default.removeItem(at: inputFile) }
    process.standardInput = try FileHandle(forReadingFrom: inputFile)
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 || environment != nil || input != nil else {
        throw NSError(domain: "run", code: Int(process.terminationStatus), userInfo: ["output": text])
    }
    return (process.terminationStatus, text)
}

final class FakeNode: @unchecked Sendable {
    // Everything mutable is guarded by `lock`.
    let nodeID: Int
    let clusterID: String
    private let listener: TCPListener
    private let tls: TLSContext
    private let crypto: CryptoContext
    private let lock = NSLock()
    private var counter: UInt64 = 1
    private var keys: [KeyHandle: (attributes: KeyAttributes, rsa: RSAPrivateKey?, secret: [UInt8])] = [:]
    private var open: [TLSConnection] = []
    private var doomed: Set<ObjectIdentifier> = []
    private(set) var connectionCount = 0
    private(set) var loginCount = 0
    private(set) var requests: [CloudHSMCore.Operation] = []
    private(set) var signCount: UInt64 = 0

    var port: UInt16 { listener.port }

    /// Nodes that receive a copy of every token key made here (replication, emulated).
    var replicas: [FakeNode] = []
    /// Operations answered "throttled" (0xbb) at once.
    var throttled: Set<CloudHSMCore.Operation> = []
    /// Operations answered "not yet replicated" (0xbc) at once.
    var notReplicated: Set<CloudHSMCore.Operation> = []
    /// Operations whose connection is closed, unanswered, when they arrive (a node that
    /// dies while it works).
    var dropOn: Set<CloudHSMCore.Operation> = []
    /// A pause before each sign is answered (without the lock): a slow node.
    var signDelayMicroseconds: UInt32 = 0
    /// A pause before a request of these operations is answered (without the lock).
    var delays: [CloudHSMCore.Operation: UInt32] = [:]
    /// A frozen node (as after SIGSTOP): connections are accepted by the kernel but no
    /// handshake completes and no request is answered until it thaws.
    var frozen = false
    /// Closes every accepted connection before the TLS handshake, sending nothing.
    var closesBeforeHandshake = false
    /// Sent as a notice (request id 0) right after the handshake, then the connection closes.
    var noticeAfterHandshake: HSMError?
    /// Answers a request of these operations with a notice instead, then closes.
    var noticeOn: [CloudHSMCore.Operation: HSMError] = [:]
    /// The next request on a connection open now gets this notice instead of an answer,
    /// then the connection closes (a node that ended idle connections with a reason).
    private var noticeForOpen: [ObjectIdentifier: HSMError] = [:]
    /// Logins answered throttled with this detail, then the connection closes (C2).
    var throttledLogins: String?
    /// Signs running right now, and the most at once: proves parallel connections.
    private(set) var signsInProgress = 0
    private(set) var maxSignsInProgress = 0
    /// Token keys copied from a peer, waiting to be stored (outside the peer's lock).
    private var replicationQueue: [(KeyAttributes, RSAPrivateKey?, [UInt8])] = []

    /// When set, a login waits (up to 5 s) until every node sharing the barrier has
    /// received one, and fails otherwise: proves the client asks the nodes in parallel.
    var loginBarrier: LoginBarrier?

    init(
        nodeID: Int, pki: TestPKI, crypto: CryptoContext, clusterID: String = "test-cluster", port: UInt16 = 0
    ) throws {
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.crypto = crypto
        listener = try TCPListener(host: "127.0.0.1", port: port)
        tls = try TLSContext.server(
            certificatePath: pki.certificatePath, privateKeyPath: pki.keyPath, trustAnchorPath: nil,
            requireClientCertificate: false, context: crypto)
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    func stop() {
        lock.withLock { frozen = false }
        listener.close()
        dropConnections()
    }

    /// The connections open now answer their next request with `notice`, then close.
    func noticeOpenConnections(_ notice: HSMError) {
        lock.withLock { for connection in open { noticeForOpen[ObjectIdentifier(connection)] = notice } }
    }

    private func waitWhileFrozen() {
        while lock.withLock({ frozen }) { usleep(2_000) }
    }

    private func writeNotice(_ notice: HSMError, on connection: TLSConnection) {
        try? connection.writeFrame(
            Frame(
                operation: Frame.responseBit, requestID: 0,
                payload: HSMResponse.failure(notice).encodedPayload()))
        connection.close()
    }

    /// Closes every open connection, as a restarting node would. Each closes when its
    /// next request arrives, unanswered: closing it here, from another thread than the one
    /// reading it, would free its descriptor for the next accepted socket while that thread
    /// still reads it.
    func dropConnections() {
        lock.withLock {
            for connection in open { doomed.insert(ObjectIdentifier(connection)) }
            open.removeAll()
        }
    }

    func withState<T>(_ body: (FakeNode) -> T) -> T { lock.withLock { body(self) } }

    /// Copies the token keys `peer` holds and this node lacks (a returning node's catch-up).
    func catchUp(from peer: FakeNode) {
        let theirs = peer.withState { $0.keys.filter { $0.value.attributes.isToken } }
        lock.withLock { for (handle, key) in theirs where keys[handle] == nil { keys[handle] = key } }
    }

    private func acceptLoop() {
        while let socket = try? listener.accept() {
            let thread = Thread { [self] in
                waitWhileFrozen()
                if lock.withLock({ closesBeforeHandshake }) {
                    socket.close()
                    return
                }
                guard let connection = try? TLSConnection.accept(socket, context: tls, timeoutMilliseconds: 10000)
                else { return }
                lock.withLock {
                    connectionCount += 1
                    open.append(connection)
                }
                if let notice = lock.withLock({ noticeAfterHandshake }) {
                    writeNotice(notice, on: connection)
                    return
                }
                serve(connection)
            }
            thread.start()
        }
    }

    private func serve(_ connection: TLSConnection) {
        var user: String?
        var sessionKeys: Set<KeyHandle> = []
        defer {
            lock.withLock { for handle in sessionKeys { keys[handle] = nil } }
        }
        while let frame = try? connection.readFrame() {
            waitWhileFrozen()
            if lock.withLock({ doomed.remove(ObjectIdentifier(connection)) != nil }) {
                connection.close()
                return
            }
            if let notice = lock.withLock({ noticeForOpen.removeValue(forKey: ObjectIdentifier(connection)) }) {
                writeNotice(notice, on: connection)
                return
            }
            let response: HSMResponse
            do {
                let request = try HSMRequest.decode(operation: frame.operation, payload: frame.payload)
                if case .login = request, let barrier = lock.withLock({ loginBarrier }), !barrier.arriveAndWait() {
                    response = .failure(HSMError(.internalError, "the other nodes' logins did not arrive in time"))
                    try? connection.writeFrame(
                        Frame(
                            operation: frame.operation | Frame.responseBit, requestID: frame.requestID,
                            payload: response.encodedPayload()))
                    continue
                }
                let (throttle, notYet, drop, delay) = lock.withLock {
                    (throttled, notReplicated, dropOn, signDelayMicroseconds)
                }
                if drop.contains(request.operation) {
                    connection.close()
                    return
                }
                if let notice = lock.withLock({ noticeOn[request.operation] }) {
                    writeNotice(notice, on: connection)
                    return
                }
                if case .login = request, let busy = lock.withLock({ throttledLogins }) {
                    try? connection.writeFrame(
                        Frame(
                            operation: frame.operation | Frame.responseBit, requestID: frame.requestID,
                            payload: HSMResponse.failure(HSMError(.throttled, busy)).encodedPayload()))
                    connection.close()
                    return
                }
                if let pause = lock.withLock({ delays[request.operation] }) { usleep(pause) }
                if throttle.contains(request.operation) {
                    response = .failure(HSMError(.throttled, "fake node \(nodeID) is throttled"))
                } else if notYet.contains(request.operation) {
                    response = .failure(HSMError(.keyNotReplicated, "fake node \(nodeID) has not caught up"))
                } else {
                    if case .sign = request {
                        lock.withLock {
                            signsInProgress += 1
                            maxSignsInProgress = max(maxSignsInProgress, signsInProgress)
                        }
                        if delay > 0 { usleep(delay) }
                        lock.withLock { signsInProgress -= 1 }
                    }
                    let (answer, copies) = lock.withLock {
                        () -> (HSMResponse, [(KeyAttributes, RSAPrivateKey?, [UInt8])]) in
                        let answer = handle(request, user: &user, sessionKeys: &sessionKeys)
                        defer { replicationQueue.removeAll() }
                        return (answer, replicationQueue)
                    }
                    // Copied to the peers after this node's lock is released: two nodes
                    // replicating to each other at once cannot deadlock.
                    for replica in lock.withLock({ replicas }) where !copies.isEmpty {
                        replica.withState { peer in
                            for (attributes, rsa, secret) in copies {
                                peer.keys[attributes.handle] = (attributes, rsa, secret)
                            }
                        }
                    }
                    response = answer
                }
            } catch {
                response = .failure(HSMError(.invalidRequest, "\(error)"))
            }
            let reply = Frame(
                operation: frame.operation | Frame.responseBit, requestID: frame.requestID,
                payload: response.encodedPayload())
            do { try connection.writeFrame(reply) } catch { return }
        }
    }

    /// Called with `lock` held.
    private func handle(_ request: HSMRequest, user: inout String?, sessionKeys: inout Set<KeyHandle>) -> HSMResponse {
        requests.append(request.operation)
        func fail(_ code: HSMReturnCode, _ detail: String = "") -> HSMResponse { .failure(HSMError(code, detail)) }
        func newHandle() -> KeyHandle {
            defer { counter += 1 }
            return counter << 4 | UInt64(nodeID)
        }
        func store(_ attributes: KeyAttributes, rsa: RSAPrivateKey?, secret: [UInt8], session: Bool) {
            keys[attributes.handle] = (attributes, rsa, secret)
            if session {
                sessionKeys.insert(attributes.handle)
            } else {
                replicationQueue.append((attributes, rsa, secret))
            }
        }
        switch request {
        case .login(_, let name, let password):
            loginCount += 1
            guard user == nil else { return fail(.alreadyLoggedIn) }
            guard ["cu", "co"].contains(name), password == "pw" else { return fail(.loginFailed) }
            user = name
            return .success()
        case .nodeInfo:
            return .success(
                .nodeInfo(
                    NodeInfo(
                        nodeId: UInt32(nodeID), clusterId: clusterID, version: "0.1.0-fake",
                        tokenKeyCount: UInt64(keys.count - sessionKeys.count),
                        sessionKeyCount: UInt64(sessionKeys.count),
                        signOperations: signCount, decryptOperations: 0, userCount: 2)))
        default:
            break
        }
        guard let name = user else { return fail(.notLoggedIn) }
        let owner: UserID = name == "cu" ? 0x12 : 0x22
        switch request {
        case .logout:
            user = nil
            return .success()
        case .generateRandom(let count):
            return .success(.bytes((try? SecureRandom.bytes(Int(count), context: crypto)) ?? []))
        case .generateSymmetricKey(let type, let count, let label, let session, let extractable):
            let handle = newHandle()
            let secret = (try? SecureRandom.bytes(Int(count), context: crypto)) ?? []
            store(
                KeyAttributes(
                    handle: handle, keyClass: .secretKey, keyType: type, label: label, owner: owner, isToken: !session,
                    isExtractable: extractable, sizeInBits: count * 8, publicKeyInfo: []), rsa: nil, secret: secret,
                session: session)
            return .success(.handle(handle))
        case .generateRSAKeyPair(let bits, let exponent, let label, let session, let extractable):
            guard let key = try? RSAPrivateKey.generate(bits: Int(bits), publicExponent: exponent, context: crypto)
            else { return fail(.invalidArgument, "bad RSA parameters") }
            let publicHandle = newHandle()
            let privateHandle = newHandle()
            store(
                KeyAttributes(
                    handle: publicHandle, keyClass: .publicKey, keyType: .rsa, label: label, owner: owner,
                    isToken: !session, isExtractable: true, sizeInBits: bits, publicKeyInfo: key.publicKeyInfo),
                rsa: nil, secret: [], session: session)
            store(
                KeyAttributes(
                    handle: privateHandle, keyClass: .privateKey, keyType: .rsa, label: label, owner: owner,
                    isToken: !session, isExtractable: extractable, sizeInBits: bits, publicKeyInfo: key.publicKeyInfo),
                rsa: key, secret: [], session: session)
            return .success(.keyPair(publicKey: publicHandle, privateKey: privateHandle))
        case .wrapHostKey(let wrappingKey, let keyData):
            guard let wrapping = keys[wrappingKey], wrapping.attributes.keyClass == .secretKey else {
                return fail(.invalidHandle)
            }
            // Not real wrapping: enough that the client sends back what it was given.
            return .success(.bytes(keyData.map { $0 ^ wrapping.secret.first! }))
        case .wrapKey(let handle, let wrappingKey):
            guard let wrapping = keys[wrappingKey], wrapping.attributes.keyClass == .secretKey,
                let key = keys[handle]
            else { return fail(.invalidHandle) }
            guard key.attributes.isExtractable else { return fail(.keyNotExtractable) }
            guard let der = try? key.rsa?.pkcs8DER() else { return fail(.invalidKeyType) }
            return .success(.bytes(der.map { $0 ^ wrapping.secret.first! }))
        case .unwrapKey(let wrappingKey, let wrapped, let label, let session, let extractable):
            guard let wrapping = keys[wrappingKey], wrapping.attributes.keyClass == .secretKey else {
                return fail(.invalidHandle)
            }
            guard let key = try? RSAPrivateKey(der: wrapped.map { $0 ^ wrapping.secret.first! }, context: crypto)
            else { return fail(.unwrapFailed) }
            let handle = newHandle()
            store(
                KeyAttributes(
                    handle: handle, keyClass: .privateKey, keyType: .rsa, label: label, owner: owner,
                    isToken: !session, isExtractable: extractable, sizeInBits: UInt32(key.modulusBits),
                    publicKeyInfo: key.publicKeyInfo), rsa: key, secret: [], session: session)
            return .success(.handle(handle))
        case .findKeys(let filter):
            let found = keys.values.map(\.attributes).filter { a in
                (filter.keyClass == nil || filter.keyClass == a.keyClass)
                    && (filter.keyType == nil || filter.keyType == a.keyType)
                    && (filter.label == nil || filter.label == a.label)
                    && (filter.isSession == nil || filter.isSession == !a.isToken)
            }
            return .success(.handles(found.map(\.handle).sorted()))
        case .getAttributes(let handle):
            guard let key = keys[handle] else { return fail(.invalidHandle) }
            return .success(.attributes(key.attributes))
        case .exportPublicKey(let handle):
            guard let key = keys[handle], !key.attributes.publicKeyInfo.isEmpty else { return fail(.invalidHandle) }
            return .success(.bytes(key.attributes.publicKeyInfo))
        case .deleteKey(let handle):
            guard keys.removeValue(forKey: handle) != nil else { return fail(.invalidHandle) }
            return .success()
        case .sign(let handle, let mechanism, let data):
            guard let key = keys[handle] else { return fail(.invalidHandle) }
            guard let rsa = key.rsa else { return fail(.invalidKeyType) }
            guard let signature = try? rsa.sign(digest: data, mechanism: mechanism) else {
                return fail(.invalidArgument, "sign failed")
            }
            signCount += 1
            return .success(.bytes(signature))
        default:
            return fail(.invalidRequest, "not implemented by the fake node")
        }
    }
}

final class LoginBarrier: @unchecked Sendable {
    private let condition = NSCondition()
    private let parties: Int
    private var arrived = 0

    init(parties: Int) { self.parties = parties }

    /// True when all parties arrived within five seconds.
    func arriveAndWait() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        arrived += 1
        condition.broadcast()
        let deadline = Date().addingTimeInterval(5)
        while arrived < parties {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }
}

/// A client of fake nodes, as the pool tests use one: nodes by (id, port), the test CA
/// as trust anchor, logged in lazily as the fake nodes' crypto user.
func makeFakeClusterClient(
    nodes: [(id: Int, port: UInt16)], caPath: String, clusterID: String = "test-cluster",
    settings: [String] = ["connect_timeout_ms = 3000", "operation_timeout_ms = 5000"],
    source: String = "<inline>", crypto: CryptoContext, clock: PoolClock
) throws -> ClusterClient {
    var lines = ["cluster_id = \(clusterID)", "trust_anchor = \(caPath)"]
    lines += nodes.map { "node = \($0.id) 127.0.0.1:\($0.port)" }
    lines += settings
    let configuration = try ClusterConfiguration(
        text: lines.joined(separator: "\n"), baseDirectory: ".", source: source)
    let client = try ClusterClient(configuration: configuration, cryptoContext: crypto, clock: clock)
    client.useCredentials(Credentials(user: "cu", password: "pw"))
    return client
}

/// A token RSA key made through `client` (on the node it picks, replicated to the others).
func makeTokenKey(_ client: ClusterClient) throws -> KeyHandle {
    let created = client.create(
        .generateRSAKeyPair(
            modulusBits: 2048, publicExponent: 65537, label: "t", isSession: false, isExtractable: false))
    guard case .keyPair(_, let privateKey) = try created.get() else { throw HSMError(.internalError, "\(created)") }
    return privateKey
}
