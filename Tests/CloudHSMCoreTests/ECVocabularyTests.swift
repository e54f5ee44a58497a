// The EC vocabulary shared by nodes, tools and provider: AWS's curve ids and their names,
// the curve read from a SubjectPublicKeyInfo, and what ECDSA accepts as input.

import XCTest

@testable import CloudHSMCore

final class ECVocabularyTests: XCTestCase {
    func testCurveIdsFollowAWSAndOnlyThreeAreSupported() {
        XCTAssertEqual(ECCurve.p256.rawValue, 2)
        XCTAssertEqual(ECCurve.p384.rawValue, 14)
        XCTAssertEqual(ECCurve.p521.rawValue, 15)
        XCTAssertEqual(KeyType.ec.rawValue, 3)
        XCTAssertEqual(ECCurve.supported.map(\.fieldBits), [256, 384, 521])
        XCTAssertEqual(ECCurve.supported.map(\.coordinateLength), [32, 48, 66])
        XCTAssertEqual(ECCurve.p256.name, "P-256 (prime256v1)")
        XCTAssertNil(ECCurve.p256.problem)
        // Every other id AWS documents is refused by its name; unknown ids by number.
        for id in UInt32(1)...16 where ![2, 14, 15].contains(id) {
            let curve = ECCurve(rawValue: id)
            XCTAssertFalse(curve.isSupported)
            XCTAssertNotNil(curve.openSSLName, "id \(id)")
            XCTAssertTrue(curve.problem!.hasPrefix("curve not supported: \(curve.openSSLName!) (curve id \(id))"))
        }
        XCTAssertEqual(
            ECCurve(rawValue: 16).problem,
            "curve not supported: secp256k1 (curve id 16); the HSMs support 2 (P-256), 14 (P-384) or 15 (P-521)")
        XCTAssertEqual(ECCurve(rawValue: 99).name, "curve id 99")
        XCTAssertEqual(ECCurve(rawValue: 0).fieldBits, 0)
        XCTAssertNil(ECCurve(rawValue: 13).oidDER)
    }

    func testCurveNamesAsOpenSSLAndUsersWriteThem() {
        XCTAssertEqual(ECCurve(name: "prime256v1"), .p256)
        XCTAssertEqual(ECCurve(name: "P-256"), .p256)
        XCTAssertEqual(ECCurve(name: "SECP256R1"), .p256)
        XCTAssertEqual(ECCurve(name: "secp384r1"), .p384)
        XCTAssertEqual(ECCurve(name: "P-521"), .p521)
        XCTAssertNil(ECCurve(name: "secp256k1"))
        XCTAssertNil(ECCurve(name: ""))
    }

    func testCurveOfASubjectPublicKeyInfo() {
        XCTAssertEqual(ECCurve(publicKeyInfo: CoreFuzzSeedTests.ecSPKI), .p256)
        // P-384: the same shape with secp384r1's OID and a 97-byte point.
        let p384 =
            [0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]
            + ECCurve.p384.oidDER! + [0x03, 0x62, 0x00, 0x04] + [UInt8](repeating: 1, count: 96)
        XCTAssertEqual(ECCurve(publicKeyInfo: p384), .p384)
        // An RSA key, a truncated key, trailing bytes and another curve's OID are no answer.
        XCTAssertNil(ECCurve(publicKeyInfo: CoreFuzzSeedTests.spki))
        XCTAssertNil(ECCurve(publicKeyInfo: Array(CoreFuzzSeedTests.ecSPKI.dropLast())))
        XCTAssertNil(ECCurve(publicKeyInfo: CoreFuzzSeedTests.ecSPKI + [0]))
        var k1 = CoreFuzzSeedTests.ecSPKI
        k1[22] = 0x08  // the OID's last byte: 1.2.840.10045.3.1.8, no curve of ours
        XCTAssertNil(ECCurve(publicKeyInfo: k1))
        XCTAssertNil(ECCurve(publicKeyInfo: []))
    }

    func testECDSAInputIsADigest() {
        for length in [20, 28, 32, 48, 64] { XCTAssertNil(ECDSAInput.problem(length: length, digest: .none)) }
        XCTAssertEqual(
            ECDSAInput.problem(length: 33, digest: .none),
            "ECDSA input is 33 bytes; it must be a SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 digest "
                + "(20, 28, 32, 48 or 64 bytes)")
        XCTAssertNil(ECDSAInput.problem(length: 48, digest: .sha384))
        XCTAssertEqual(
            ECDSAInput.problem(length: 32, digest: .sha384), "ECDSA input is 32 bytes, a SHA384 digest is 48")
        XCTAssertTrue(SignMechanism.ecdsa(digest: .sha256).isECDSA)
        XCTAssertFalse(SignMechanism.raw.isECDSA)
    }

    func testNodeInfoCountsECDSASignaturesApart() throws {
        let info = NodeInfo(
            nodeId: 0, clusterId: "c", version: "v", tokenKeyCount: 0, sessionKeyCount: 0, signOperations: 2,
            decryptOperations: 3, userCount: 1, ecdsaSignOperations: 5)
        XCTAssertEqual(info.privateKeyOperations, 10)
        let decoded = try HSMResponse.decode(
            operation: .nodeInfo, payload: HSMResponse.success(.nodeInfo(info)).encodedPayload())
        XCTAssertEqual(decoded.body, .nodeInfo(info))
    }
}
