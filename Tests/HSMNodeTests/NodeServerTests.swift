// The node over real TLS on loopback: requests are answered in order with their ids,
// a malformed frame gets "invalid request" and a close, and the node keeps serving.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMNode

final class NodeServerTests: XCTestCase {
    var node: TestNode!
    var server: NodeServer!
    var certificates: String!
    var clientTLS: TLSContext!

    override func setUpWithError() throws {
        node = try TestNode()
        certificates = node.directory + "/certs"
        try FileManager.default.createDirectory(atPath: certificates, withIntermediateDirectories: true)
        try makeCertificates(in: certificates)
        let tls = try TLSContext.server(
            certificatePath: certificates + "/node.crt", privateKeyPath: certificates + "/node.key",
            trustAnchorPath: certificates + "/ca.crt", requireClientCertificate: false, context: sharedContext)
        server = try NodeServer(
            handler: RequestHandler(
                state: node.state, executor: CryptoCapacity(workers: 2, queueLimit: 8, operationsPerSecond: nil)),
            host: "127.0.0.1", port: 0, tls: tls)
        let running = server!
        Thread.detachNewThread { running.serve() }
        clientTLS = try TLSContext.client(trustAnchorPath: certificates + "/ca.crt", context: sharedContext)
    }

    override func tearDown() {
        server?.stop()
    }

    private func makeCertificates(in directory: String) throws {
        let script = """
            set -e
            cd '\(directory)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj /CN=test-ca -days 2
            openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj /CN=127.0.0.1
            printf 'subjectAltName=IP:127.0.0.1\\n' > ext
            openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out node.crt -days 2 -extfile ext
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "openssl could not make test certificates")
    }

    private func connect() throws -> TLSConnection {
        try TLSConnection.connect(host: "127.0.0.1", port: server.port, context: clientTLS, timeoutMilliseconds: 5000)
    }

    private func send(_ request: HSMRequest, id: UInt32, on connection: TLSConnection) throws -> HSMResponse {
        try connection.writeFrame(
            Frame(operation: request.operation.rawValue, requestID: id, payload: request.encodedPayload()))
        let frame = try connection.readFrame()
        XCTAssertEqual(frame.requestID, id)
        XCTAssertEqual(frame.operation, request.operation.rawValue | 0x80)
        return try HSMResponse.decode(operation: request.operation, payload: frame.payload)
    }

    func testServesRequestsOverTLS() throws {
        let connection = try connect()
        defer { connection.close() }
        XCTAssertEqual(
            try send(.login(role: .cryptoOfficer, user: "admin", password: "officer-pw"), id: 1, on: connection).code,
            .success)
        XCTAssertEqual(
            try send(.createUser(role: .cryptoUser, name: "web", password: "pw"), id: 2, on: connection).code, .success)
        XCTAssertEqual(try send(.logout, id: 3, on: connection).code, .success)
        XCTAssertEqual(
            try send(.login(role: .cryptoUser, user: "web", password: "pw"), id: 4, on: connection).code, .success)
        let pair = try send(
            .generateRSAKeyPair(
                modulusBits: 2048, publicExponent: 65537, label: "k", isSession: true, isExtractable: false),
            id: 5, on: connection)
        guard case .keyPair(_, let privateKey) = pair.body else { return XCTFail("\(pair)") }
        let digest = [UInt8](repeating: 7, count: 32)
        let signed = try send(
            .sign(key: privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), id: 6, on: connection)
        guard case .bytes(let signature) = signed.body else { return XCTFail("\(signed)") }
        XCTAssertEqual(signature.count, 256)
    }

    func testMalformedFrameIsAnsweredThenClosed() throws {
        let connection = try connect()
        defer { connection.close() }
        try connection.writeFrame(Frame(operation: Operation.login.rawValue, requestID: 9, payload: [1, 2]))
        let answer = try connection.readFrame()
        XCTAssertEqual(answer.requestID, 9)
        let response = try HSMResponse.decode(operation: .login, payload: answer.payload)
        XCTAssertEqual(response.code, .invalidRequest)
        XCTAssertTrue(response.detail.contains("truncated"), response.detail)
        XCTAssertThrowsError(try connection.readFrame())

        let garbage = try connect()
        defer { garbage.close() }
        try garbage.write(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        let rejected = try garbage.readFrame()
        XCTAssertEqual(try HSMResponse.decode(operation: .login, payload: rejected.payload).code, .invalidRequest)
        XCTAssertThrowsError(try garbage.readFrame())

        // The node still serves others.
        let healthy = try connect()
        defer { healthy.close() }
        XCTAssertEqual(try send(.nodeInfo, id: 1, on: healthy).code, .success)
    }

    func testDisconnectDestroysSessionKeys() throws {
        let connection = try connect()
        var officer = node.officerSession()
        _ = node.handler.handle(.createUser(role: .cryptoUser, name: "temp", password: "pw"), session: &officer)
        XCTAssertEqual(
            try send(.login(role: .cryptoUser, user: "temp", password: "pw"), id: 1, on: connection).code, .success)
        XCTAssertEqual(
            try send(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "s", isSession: true, isExtractable: false),
                id: 2, on: connection
            ).code,
            .success)
        XCTAssertEqual(try node.state.info().sessionKeyCount, 1)
        connection.close()
        for _ in 0..<50 where (try? node.state.info().sessionKeyCount) != 0 { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertEqual(try node.state.info().sessionKeyCount, 0)
    }
}
