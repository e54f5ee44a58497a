// The wire protocol: every request and response survives a round trip, and malformed,
// truncated, oversized or mutated input is rejected with an error, never a trap.

import XCTest

@testable import CloudHSMCore

final class WireProtocolTests: XCTestCase {
    static let requests: [HSMRequest] = [
        .login(role: .cryptoUser, user: "alice", password: "pä55 word"),
        .logout,
        .generateSymmetricKey(
            keyType: .aes, byteCount: 16, label: "wrapping_key_for_import", isSession: true,
            isExtractable: false),
        .generateRSAKeyPair(
            modulusBits: 2048, publicExponent: 65537, label: "rsa", isSession: false,
            isExtractable: true),
        .generateECKeyPair(curve: .p256, label: "ec", isSession: false, isExtractable: true),
        .generateECKeyPair(curve: .p521, label: "", isSession: true, isExtractable: false),
        // Any curve id travels: the node, not the decoder, refuses it by name.
        .generateECKeyPair(curve: ECCurve(rawValue: 16), label: "k1", isSession: false, isExtractable: true),
        .wrapHostKey(wrappingKey: 6, keyData: Array(repeating: 0x42, count: 1219)),
        .unwrapKey(
            wrappingKey: 6, wrappedKey: [1, 2, 3], label: "web_server_imported_key", isSession: false,
            isExtractable: false),
        .wrapKey(key: 8, wrappingKey: 6),
        .findKeys(KeyFilter()),
        .findKeys(KeyFilter(keyClass: .privateKey, keyType: .rsa, label: "x", isSession: false)),
        .getAttributes(0x1234_5678_9abc),
        .deleteKey(42),
        .exportPublicKey(43),
        .sign(key: 8, mechanism: .pkcs1(digest: .sha256), data: Array(repeating: 1, count: 32)),
        .sign(key: 8, mechanism: .pkcs1(digest: .none), data: [9, 9]),
        .sign(key: 8, mechanism: .pss(digest: .sha384, mgf1Digest: .sha256, saltLength: 48), data: [1]),
        .sign(key: 8, mechanism: .raw, data: Array(repeating: 7, count: 256)),
        .sign(key: 9, mechanism: .ecdsa(digest: .sha384), data: Array(repeating: 3, count: 48)),
        .sign(key: 9, mechanism: .ecdsa(digest: .none), data: Array(repeating: 4, count: 32)),
        .decrypt(key: 8, mechanism: .raw, data: [1]),
        .decrypt(key: 8, mechanism: .pkcs1, data: [2]),
        .decrypt(key: 8, mechanism: .oaep(digest: .sha1, mgf1Digest: .sha512, label: [1, 2]), data: [3]),
        .generateRandom(count: 48),
        .nodeInfo,
        .createUser(role: .cryptoOfficer, name: "bob", password: "secret"),
        .deleteUser(name: "bob"),
        .changePassword(name: "bob", newPassword: "new"),
        .listUsers,
    ]

    func testEveryRequestRoundTripsThroughAFrame() throws {
        for (index, request) in Self.requests.enumerated() {
            let frame = Frame(
                operation: request.operation.rawValue, requestID: UInt32(index), payload: request.encodedPayload())
            let bytes = frame.encoded()
            let decoded = try XCTUnwrap(try Frame.decode(bytes))
            XCTAssertEqual(decoded.consumed, bytes.count)
            XCTAssertEqual(decoded.frame, frame)
            XCTAssertEqual(try HSMRequest.decode(operation: frame.operation, payload: frame.payload), request)
        }
    }

    func testResponsesRoundTripForTheirOperation() throws {
        let attributes = KeyAttributes(
            handle: 8, keyClass: .privateKey, keyType: .rsa, label: "k", owner: 0x8000_0031, isToken: true,
            isExtractable: false, sizeInBits: 2048, publicKeyInfo: [0x30, 0x00])
        let cases: [(CloudHSMCore.Operation, HSMResponse)] = [
            (.login, .success()),
            (.generateSymmetricKey, .success(.handle(6))),
            (.generateRSAKeyPair, .success(.keyPair(publicKey: 7, privateKey: 8))),
            (.generateECKeyPair, .success(.keyPair(publicKey: 17, privateKey: 18))),
            (.sign, .success(.bytes(Array(repeating: 5, count: 256)))),
            (.findKeys, .success(.handles([1, 2, 3]))),
            (.findKeys, .success(.handles([]))),
            (.getAttributes, .success(.attributes(attributes))),
            (
                .nodeInfo,
                .success(
                    .nodeInfo(
                        NodeInfo(
                            nodeId: 2, clusterId: "local-dev", version: "0.1.0", tokenKeyCount: 3, sessionKeyCount: 1,
                            signOperations: 10, decryptOperations: 2, userCount: 2)))
            ),
            (
                .nodeInfo,
                .success(
                    .nodeInfo(
                        NodeInfo(
                            nodeId: 1, clusterId: "local-dev", version: "0.1.0", tokenKeyCount: 3, sessionKeyCount: 0,
                            signOperations: 10, decryptOperations: 2, userCount: 2, ecdsaSignOperations: 7)))
            ),
            // Before login: who the node is, no counters.
            (.nodeInfo, .success(.nodeInfo(NodeInfo(nodeId: 2, clusterId: "local-dev", version: "0.1.0")))),
            (
                .listUsers,
                .success(
                    .users([
                        UserInfo(
                            id: 1, role: .cryptoOfficer, name: "admin", isLocked: false,
                            failedLogins: 0)
                    ]))
            ),
            (.sign, .failure(HSMError(.invalidHandle, "no key with handle 9"))),
            (.deleteKey, .failure(HSMError(.keyAccessDenied))),
        ]
        for (operation, response) in cases {
            let decoded = try HSMResponse.decode(operation: operation, payload: response.encodedPayload())
            XCTAssertEqual(decoded, response)
        }
        XCTAssertThrowsError(try HSMResponse(code: .invalidHandle, detail: "gone").get()) { error in
            XCTAssertEqual(error as? HSMError, HSMError(.invalidHandle, "gone"))
        }
    }

    func testMalformedFramesAreRejected() {
        let good = Frame(operation: CloudHSMCore.Operation.nodeInfo.rawValue, requestID: 1, payload: []).encoded()
        XCTAssertThrowsError(try Frame.decode([0x47, 0x45, 0x54, 0x20] + Array("/ HTTP/1.1".utf8))) {
            XCTAssertEqual($0 as? WireError, .badMagic)
        }
        var version = good
        version[2] = 9
        XCTAssertThrowsError(try Frame.decode(version)) { XCTAssertEqual($0 as? WireError, .unsupportedVersion(9)) }
        var oversized = good
        oversized[8...11] = [0x7f, 0xff, 0xff, 0xff]
        XCTAssertThrowsError(try Frame.decode(oversized)) {
            XCTAssertEqual($0 as? WireError, .frameTooLarge(0x7fff_ffff))
        }
        // Incomplete input asks for more instead of failing.
        XCTAssertNil(try Frame.decode(Array(good.prefix(5))))
        var withPayload = Frame(operation: 1, requestID: 1, payload: [1, 2, 3]).encoded()
        withPayload.removeLast()
        XCTAssertNil(try Frame.decode(withPayload))
    }

    func testMalformedPayloadsAreRejected() {
        XCTAssertThrowsError(try HSMRequest.decode(operation: 0x7e, payload: [])) {
            XCTAssertEqual($0 as? WireError, .unknownOperation(0x7e))
        }
        let login = HSMRequest.login(role: .cryptoUser, user: "alice", password: "pw").encodedPayload()
        XCTAssertThrowsError(
            try HSMRequest.decode(operation: CloudHSMCore.Operation.login.rawValue, payload: login + [0])
        ) {
            XCTAssertEqual($0 as? WireError, .trailingBytes(1))
        }
        XCTAssertThrowsError(
            try HSMRequest.decode(operation: CloudHSMCore.Operation.login.rawValue, payload: Array(login.dropLast(3))))
        var badRole = login
        badRole[0] = 9
        XCTAssertThrowsError(try HSMRequest.decode(operation: CloudHSMCore.Operation.login.rawValue, payload: badRole))
        // A length prefix that claims more than the frame holds.
        XCTAssertThrowsError(
            try HSMRequest.decode(operation: CloudHSMCore.Operation.deleteUser.rawValue, payload: [0, 0, 0, 99, 65]))
        // A NUL inside a string would be cut short in C: refused, with its name.
        let nul = HSMRequest.deleteUser(name: "bob\u{0}admin").encodedPayload()
        XCTAssertThrowsError(try HSMRequest.decode(operation: CloudHSMCore.Operation.deleteUser.rawValue, payload: nul))
        {
            XCTAssertEqual($0 as? WireError, .invalidValue("user name contains a NUL byte"))
        }
        // A boolean must be 0 or 1.
        var flags = HSMRequest.generateSymmetricKey(
            keyType: .aes, byteCount: 16, label: "", isSession: true, isExtractable: true
        ).encodedPayload()
        flags[flags.count - 1] = 2
        XCTAssertThrowsError(
            try HSMRequest.decode(operation: CloudHSMCore.Operation.generateSymmetricKey.rawValue, payload: flags))
        // PSS without a digest is not a mechanism.
        var pss = HSMRequest.sign(
            key: 1, mechanism: .pss(digest: .sha256, mgf1Digest: .sha256, saltLength: 32), data: []
        )
        .encodedPayload()
        pss[9] = DigestAlgorithm.none.rawValue
        XCTAssertThrowsError(try HSMRequest.decode(operation: CloudHSMCore.Operation.sign.rawValue, payload: pss))
        // ECDSA with a digest number that names none, and a mechanism number beyond ECDSA's.
        var ecdsa = HSMRequest.sign(key: 1, mechanism: .ecdsa(digest: .sha256), data: []).encodedPayload()
        ecdsa[9] = 9
        XCTAssertThrowsError(try HSMRequest.decode(operation: CloudHSMCore.Operation.sign.rawValue, payload: ecdsa)) {
            XCTAssertEqual($0 as? WireError, .invalidValue("digest 9"))
        }
        ecdsa[8] = 5
        XCTAssertThrowsError(try HSMRequest.decode(operation: CloudHSMCore.Operation.sign.rawValue, payload: ecdsa)) {
            XCTAssertEqual($0 as? WireError, .invalidValue("sign mechanism 5"))
        }
    }

    /// Every single-byte change and every truncation of every request either decodes or
    /// throws: the decoder never traps, whatever a client sends.
    func testMutatedInputNeverTraps() {
        var decodedCount = 0
        for request in Self.requests {
            let payload = request.encodedPayload()
            let operation = request.operation.rawValue
            for length in 0..<payload.count
            where (try? HSMRequest.decode(operation: operation, payload: Array(payload.prefix(length)))) != nil {
                decodedCount += 1
            }
            for index in payload.indices {
                for value: UInt8 in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    var mutated = payload
                    mutated[index] = value
                    if (try? HSMRequest.decode(operation: operation, payload: mutated)) != nil { decodedCount += 1 }
                }
            }
        }
        XCTAssertGreaterThan(decodedCount, 0)
    }

    func testReturnCodesPrintLikeKeyMgmtUtil() {
        XCTAssertEqual(HSMReturnCode.success.description, "0x00 : HSM Return: SUCCESS")
        XCTAssertEqual(HSMReturnCode.invalidHandle.description, "0xa8 : HSM Error: Invalid key handle")
        XCTAssertEqual(HSMReturnCode.keyAccessDenied.paddedHex, "0x000000c6")
        XCTAssertEqual(HSMReturnCode(rawValue: 0x1234).meaning, "Unknown HSM return code")
    }
}
