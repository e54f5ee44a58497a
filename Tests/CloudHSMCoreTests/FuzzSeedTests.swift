// Seeds for the fuzz targets in Fuzz/Targets, made from the vectors the unit tests use
// (WireProtocolTests, KeyReferenceTests, DERTests, ReplicationTests' peer messages), good
// and malformed. `make fuzz-seeds` runs this with FUZZ_SEED_DIR set, which writes them to
// FUZZ_SEED_DIR/<target>/; without it the test checks that the seeds still reach each
// decoder's accepting path, which a change of format would break.

import Foundation
import XCTest

@testable import CloudHSMCore

final class CoreFuzzSeedTests: XCTestCase {
    /// The stand-in SubjectPublicKeyInfo of KeyReferenceTests.
    static let spki: [UInt8] = [
        0x30, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ]

    /// A P-256 SubjectPublicKeyInfo (`openssl ecparam -name prime256v1 -genkey | openssl pkey -pubout`).
    static let ecSPKI: [UInt8] = Base64.decode(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE6q8ipJFi2iufap+JVD2GbH92X0H5wOfFbLWSbAU5Yn/JVkDRGEO0nVJ5aBBtWaGV9NQ+dnrEWtp7wDyswn2PLQ=="
    )!

    static func frameSeeds() -> [[UInt8]] {
        var seeds = WireProtocolTests.requests.enumerated().map { index, request in
            Frame(operation: request.operation.rawValue, requestID: UInt32(index), payload: request.encodedPayload())
                .encoded()
        }
        let good = Frame(operation: CloudHSMCore.Operation.nodeInfo.rawValue, requestID: 1, payload: []).encoded()
        var version = good
        version[2] = 9
        var oversized = good
        oversized[8...11] = [0x7f, 0xff, 0xff, 0xff]
        // Two frames in one buffer, a node notice (C1: response bit, request id 0), garbage.
        let notice = Frame(
            operation: Frame.responseBit, requestID: 0,
            payload: HSMResponse.failure(HSMError(.throttled, "node busy: connection limit")).encodedPayload())
        seeds += [version, oversized, Array(good.prefix(5)), seeds[0] + seeds[1], notice.encoded()]
        seeds.append([0x47, 0x45, 0x54, 0x20] + Array("/ HTTP/1.1".utf8))
        return seeds
    }

    static func requestSeeds() -> [[UInt8]] {
        var seeds = WireProtocolTests.requests.map { [$0.operation.rawValue] + $0.encodedPayload() }
        let login =
            [CloudHSMCore.Operation.login.rawValue]
            + HSMRequest.login(role: .cryptoUser, user: "alice", password: "pw")
            .encodedPayload()
        var badRole = login
        badRole[1] = 9
        let nul =
            [CloudHSMCore.Operation.deleteUser.rawValue] + HSMRequest.deleteUser(name: "bob\u{0}admin").encodedPayload()
        seeds += [login + [0], badRole, nul, [0x7e], [CloudHSMCore.Operation.deleteUser.rawValue, 0, 0, 0, 99, 65]]
        return seeds
    }

    /// The cases of WireProtocolTests.testResponsesRoundTripForTheirOperation.
    static func responseSeeds() -> [[UInt8]] {
        let attributes = KeyAttributes(
            handle: 8, keyClass: .privateKey, keyType: .rsa, label: "k", owner: userReference(), isToken: true,
            isExtractable: false, sizeInBits: 2048, publicKeyInfo: spki)
        let ecAttributes = KeyAttributes(
            handle: 18, keyClass: .privateKey, keyType: .ec, label: "ec", owner: userReference(), isToken: true,
            isExtractable: true, sizeInBits: 256, publicKeyInfo: ecSPKI)
        let responses: [(CloudHSMCore.Operation, HSMResponse)] = [
            (.login, .success()),
            (.generateSymmetricKey, .success(.handle(6))),
            (.generateRSAKeyPair, .success(.keyPair(publicKey: 7, privateKey: 8))),
            (.sign, .success(.bytes(Array(repeating: 5, count: 256)))),
            (.findKeys, .success(.handles([1, 2, 3]))),
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
                .listUsers,
                .success(
                    .users([UserInfo(id: 1, role: .cryptoOfficer, name: "admin", isLocked: false, failedLogins: 0)]))
            ),
            (.sign, .failure(HSMError(.invalidHandle, "no key with handle 9"))),
            (.login, .failure(HSMError(.throttled, "node busy: connection limit (1024 connections)"))),
            // EC keys: a key pair, an EC private key's attributes, counters with ECDSA signatures.
            (.generateECKeyPair, .success(.keyPair(publicKey: 17, privateKey: 18))),
            (.getAttributes, .success(.attributes(ecAttributes))),
            (.sign, .success(.bytes(Array(repeating: 6, count: 71)))),
            (
                .nodeInfo,
                .success(
                    .nodeInfo(
                        NodeInfo(
                            nodeId: 1, clusterId: "local-dev", version: "0.1.0", tokenKeyCount: 2, sessionKeyCount: 0,
                            signOperations: 1, decryptOperations: 0, userCount: 2, ecdsaSignOperations: 9)))
            ),
            (.generateECKeyPair, .failure(HSMError(.invalidArgument, "curve not supported: secp256k1 (curve id 16)"))),
        ]
        let seeds = responses.map { [$0.0.rawValue] + $0.1.encodedPayload() }
        // A trailing byte, and a handle count larger than the handles that follow.
        return seeds + [seeds[0] + [0], Array(seeds[4].dropLast(8))]
    }

    /// The messages of ReplicationTests.testPeerMessagesRoundTripAndRejectGarbage.
    static func peerSeeds() -> (requests: [[UInt8]], responses: [[UInt8]]) {
        let key = PeerKeyRecord(
            handle: 0x51, keyClass: .secretKey, keyType: .aes, label: "x", owner: userReference(),
            isExtractable: true, sizeInBits: 128, publicKeyInfo: [], material: [9, 9], version: 3, isDeleted: false)
        let user = PeerUserRecord(
            id: 4, name: "cu", role: .cryptoUser, salt: [1], passwordHash: [2], iterations: 10, version: 1,
            isDeleted: false)
        let inventory = PeerInventory(
            handleCounter: 7, keys: [0x51: RecordStamp(version: 3, isDeleted: true)],
            users: [userReference(): RecordStamp(version: 1, isDeleted: false, fingerprint: 42)])
        let responses: [(PeerOperation, PeerResponse)] = [
            (.listVersions, PeerResponse(body: .inventory(inventory))),
            (.fetchRecords, PeerResponse(body: .records(PeerRecords(keys: [key], users: [user])))),
            (.pushRecords, PeerResponse(body: .stored)),
            (.pushRecords, PeerResponse.failure(HSMError(.internalError, "disk full"))),
        ]
        var responseSeeds = responses.map { [$0.0.rawValue] + $0.1.encodedPayload() }
        // An EC private key travels as any private key does: PKCS#8 material, its SPKI.
        let ecKey = PeerKeyRecord(
            handle: 0x62, keyClass: .privateKey, keyType: .ec, label: "ec", owner: userReference(),
            isExtractable: false, sizeInBits: 384, publicKeyInfo: ecSPKI, material: [0x30, 0x03, 0x02, 0x01, 0x00],
            version: 1, isDeleted: false)
        responseSeeds.append(
            [PeerOperation.fetchRecords.rawValue]
                + PeerResponse(body: .records(PeerRecords(keys: [ecKey], users: []))).encodedPayload())
        let requests: [PeerRequest] = [.listVersions, .fetchRecords(keys: [1, 2], users: [userReference()])]
        // A push carries the records a fetch answers, without the answer's code (u32) and
        // empty detail (u32 length).
        let push = [PeerOperation.pushRecords.rawValue] + responseSeeds[1].dropFirst(1 + 8)
        return (
            requests.map { [$0.operation.rawValue] + $0.encodedPayload() }
                + [push, [0x41, 0xff, 0xff, 0xff, 0xff], [0x4f]],
            responseSeeds + [Array(responseSeeds[1].dropLast())]
        )
    }

    // How records name a user: by name until keys belonged to user ids (issue 8), by id
    // since. Overloaded on the result, so each initializer takes the form it expects and
    // these seeds build on both sides of that change.
    private static func userReference() -> UInt32 { 4 }

    /// The references of KeyReferenceTests, with and without label, alone and after a
    /// certificate, and its malformed files.
    static func keyReferences() -> [KeyReference] {
        [
            KeyReference(
                clusterID: "local-dev", handle: 0x1_0000_0020, publicKeyInfo: spki, label: "web_server_imported_key"),
            KeyReference(clusterID: "local-dev", handle: 8, publicKeyInfo: spki),
            KeyReference(clusterID: "c", handle: 128, publicKeyInfo: spki, label: "l"),
        ]
    }

    static func pemSeeds() -> [[UInt8]] {
        var seeds = keyReferences().map { Array($0.pemEncoded().utf8) }
        let certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        seeds.append(Array((certificate + keyReferences()[1].pemEncoded()).utf8))
        seeds.append(Array("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n".utf8))
        seeds.append(
            Array(keyReferences()[1].pemEncoded().split(separator: "\n").dropLast().joined(separator: "\n").utf8))
        seeds.append(Array("-----BEGIN CLOUDHSM KEY REFERENCE-----\n!!!\n-----END CLOUDHSM KEY REFERENCE-----\n".utf8))
        return seeds
    }

    static func derSeeds() -> [[UInt8]] {
        let der = keyReferences().map { $0.derEncoded() }
        var version = der[1]
        version[4] = 2
        return der + [Array(der[1].prefix(9)), version, der[1] + [0x00]] + DERTests.fuzzFindings
    }

    static func base64Seeds() -> [[UInt8]] {
        ["Zm9vYmFy", "Zm9vYmE=", "Zm9vYg==", "Zm9v\nYmE=", "Zm9", "Zm=v"].map { Array($0.utf8) }
            + [Array(Base64.encode((0..<300).map { UInt8(truncatingIfNeeded: $0 * 7) }).utf8)]
    }

    static func seeds() -> [String: [[UInt8]]] {
        let peer = peerSeeds()
        return [
            "frame": frameSeeds(), "request": requestSeeds(), "response": responseSeeds(),
            "peer_request": peer.requests, "peer_response": peer.responses, "key_pem": pemSeeds(),
            "key_der": derSeeds(), "der": derSeeds(), "base64": base64Seeds(),
        ]
    }

    /// What each target's decoder must accept at least once among its seeds.
    static let accepts: [String: ([UInt8]) -> Bool] = [
        "frame": { (try? Frame.decode($0)) != nil },
        "request": { (try? HSMRequest.decode(operation: $0[0], payload: Array($0.dropFirst()))) != nil },
        "response": {
            guard let operation = CloudHSMCore.Operation(rawValue: $0[0]) else { return false }
            return (try? HSMResponse.decode(operation: operation, payload: Array($0.dropFirst()))) != nil
        },
        "peer_request": { (try? PeerRequest.decode(operation: $0[0], payload: Array($0.dropFirst()))) != nil },
        "peer_response": {
            guard let operation = PeerOperation(rawValue: $0[0]) else { return false }
            return (try? PeerResponse.decode(operation: operation, payload: Array($0.dropFirst()))) != nil
        },
        "key_pem": { (try? KeyReference(pem: String(decoding: $0, as: UTF8.self))) != nil },
        "key_der": { (try? KeyReference(der: $0)) != nil },
        "der": { (try? KeyReference(der: $0)) != nil },
        "base64": { Base64.decode(Substring(String(decoding: $0, as: UTF8.self))) != nil },
    ]

    func testSeedsReachEveryDecoderAndAreWrittenOnRequest() throws {
        let seeds = Self.seeds()
        XCTAssertEqual(Set(seeds.keys), Set(Self.accepts.keys))
        for (target, inputs) in seeds {
            let accepted = inputs.filter { !$0.isEmpty && Self.accepts[target]!($0) }
            XCTAssertFalse(accepted.isEmpty, "no seed of \(target) decodes")
            XCTAssertLessThan(accepted.count, inputs.count, "\(target) has no malformed seed")
            for input in inputs { XCTAssertLessThanOrEqual(input.count, 4096, "\(target): seeds stay small") }
        }
        try FuzzSeedWriter.write(seeds)
    }
}

/// Writes seeds to FUZZ_SEED_DIR/<target>/<hash>, replacing what was there, when the
/// variable is set; each file is named by a hash of its content, so reruns change nothing.
enum FuzzSeedWriter {
    static func write(_ seeds: [String: [[UInt8]]]) throws {
        guard let root = ProcessInfo.processInfo.environment["FUZZ_SEED_DIR"], !root.isEmpty else { return }
        let files = FileManager.default
        for (target, inputs) in seeds {
            let directory = URL(fileURLWithPath: root).appendingPathComponent(target)
            try? files.removeItem(at: directory)
            try files.createDirectory(at: directory, withIntermediateDirectories: true)
            for input in inputs {
                let name = String(
                    input.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }, radix: 16)
                try Data(input).write(to: directory.appendingPathComponent(name))
            }
        }
    }
}
