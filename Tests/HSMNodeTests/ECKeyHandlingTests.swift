// EC keys in a node: generation on P-256, P-384 and P-521 (token and session, extractable
// or not), ECDSA signatures and their input checks, public key export, import through
// wrap and unwrap (SEC1 and PKCS#8), wrapKey, ownership, deletion, counters, keys that
// survive a restart, and replication to a peer exactly as RSA keys replicate.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMNode

final class ECKeyHandlingTests: XCTestCase {
    var node: TestNode!

    override func setUpWithError() throws {
        node = try TestNode()
    }

    var handler: RequestHandler { node.handler }

    func generate(
        _ curve: ECCurve, label: String = "ec", isSession: Bool = false, isExtractable: Bool = false,
        _ session: inout Session
    ) throws -> (publicKey: KeyHandle, privateKey: KeyHandle) {
        try XCTUnwrap(
            handler.ok(
                .generateECKeyPair(curve: curve, label: label, isSession: isSession, isExtractable: isExtractable),
                &session
            ).pair)
    }

    func attributes(_ handle: KeyHandle, _ session: inout Session) throws -> KeyAttributes {
        guard case .attributes(let attributes) = handler.ok(.getAttributes(handle), &session) else {
            throw HSMError(.internalError, "no attributes for \(handle)")
        }
        return attributes
    }

    func info(_ session: inout Session) throws -> NodeInfo {
        guard case .nodeInfo(let info) = handler.ok(.nodeInfo, &session) else {
            throw HSMError(.internalError, "no node info")
        }
        return info
    }

    func testGeneratesOnEachCurveAndSignaturesVerify() throws {
        var alice = node.userSession("alice")
        var signatures: UInt64 = 0
        for curve in ECCurve.supported {
            for isSession in [false, true] {
                let pair = try generate(curve, isSession: isSession, &alice)
                let privateAttributes = try attributes(pair.privateKey, &alice)
                let publicAttributes = try attributes(pair.publicKey, &alice)
                XCTAssertEqual(privateAttributes.keyType, .ec)
                XCTAssertEqual(privateAttributes.keyClass, .privateKey)
                XCTAssertEqual(publicAttributes.keyClass, .publicKey)
                XCTAssertEqual(privateAttributes.sizeInBits, UInt32(curve.fieldBits))
                XCTAssertEqual(privateAttributes.isToken, !isSession)
                XCTAssertEqual(ECCurve(publicKeyInfo: privateAttributes.publicKeyInfo), curve)
                XCTAssertEqual(publicAttributes.publicKeyInfo, privateAttributes.publicKeyInfo)
                let spki = try XCTUnwrap(handler.ok(.exportPublicKey(pair.privateKey), &alice).bytes)
                XCTAssertEqual(handler.ok(.exportPublicKey(pair.publicKey), &alice).bytes, spki)
                let publicKey = try ECPublicKey(publicKeyInfo: spki, context: sharedContext)
                XCTAssertEqual(publicKey.curve, curve)
                for algorithm in DigestAlgorithm.allCases where algorithm != .none {
                    let digest = try Digest.hash(
                        Array("to be signed".utf8), algorithm: algorithm, context: sharedContext)
                    for mechanismDigest in [algorithm, .none] {
                        let signature = try XCTUnwrap(
                            handler.ok(
                                .sign(key: pair.privateKey, mechanism: .ecdsa(digest: mechanismDigest), data: digest),
                                &alice
                            ).bytes)
                        XCTAssertTrue(publicKey.verify(signature: signature, digest: digest), "\(curve) \(algorithm)")
                        signatures += 1
                    }
                }
            }
        }
        let counters = try info(&alice)
        XCTAssertEqual(counters.ecdsaSignOperations, signatures)
        XCTAssertEqual(counters.signOperations, 0, "RSA signatures are counted apart")
        XCTAssertEqual(counters.privateKeyOperations, signatures)
        XCTAssertEqual(counters.tokenKeyCount, 6)
        XCTAssertEqual(counters.sessionKeyCount, 6)
    }

    func testUnsupportedCurvesAreRefusedByName() throws {
        var alice = node.userSession("alice")
        for (id, name) in [
            (UInt32(16), "secp256k1 (curve id 16)"), (13, "secp224r1 (curve id 13)"), (99, "curve id 99"),
        ] {
            let response = handler.handle(
                .generateECKeyPair(curve: ECCurve(rawValue: id), label: "x", isSession: false, isExtractable: true),
                session: &alice)
            XCTAssertEqual(response.code, .invalidArgument)
            XCTAssertTrue(response.detail.hasPrefix("curve not supported: \(name)"), response.detail)
        }
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter()), &alice).handles, [])
        XCTAssertEqual(
            handler.code(
                .generateSymmetricKey(keyType: .ec, byteCount: 32, label: "", isSession: true, isExtractable: true),
                &alice), .invalidArgument)
    }

    func testSignChecksInputsAndKeyKinds() throws {
        var alice = node.userSession("alice")
        let pair = try generate(.p256, &alice)
        let rsa = try XCTUnwrap(
            handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "rsa", isSession: true, isExtractable: false),
                &alice
            ).pair)
        let digest = [UInt8](repeating: 5, count: 32)
        func refused(_ request: HSMRequest) -> HSMResponse { handler.handle(request, session: &alice) }

        let wrongLength = refused(.sign(key: pair.privateKey, mechanism: .ecdsa(digest: .sha384), data: digest))
        XCTAssertEqual(wrongLength.code, .invalidArgument)
        XCTAssertEqual(wrongLength.detail, "ECDSA input is 32 bytes, a SHA384 digest is 48")
        let notADigest = refused(.sign(key: pair.privateKey, mechanism: .ecdsa(digest: .none), data: [1, 2, 3]))
        XCTAssertEqual(notADigest.code, .invalidArgument)
        XCTAssertTrue(notADigest.detail.hasPrefix("ECDSA input is 3 bytes; it must be a SHA-1"), notADigest.detail)

        let rsaOnEC = refused(.sign(key: pair.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest))
        XCTAssertEqual(rsaOnEC.code, .invalidKeyType)
        XCTAssertTrue(rsaOnEC.detail.contains("is an EC private key"), rsaOnEC.detail)
        let ecdsaOnRSA = refused(.sign(key: rsa.privateKey, mechanism: .ecdsa(digest: .sha256), data: digest))
        XCTAssertEqual(ecdsaOnRSA.code, .invalidKeyType)
        XCTAssertTrue(ecdsaOnRSA.detail.contains("is not an EC private key"), ecdsaOnRSA.detail)
        XCTAssertEqual(
            refused(.sign(key: pair.publicKey, mechanism: .ecdsa(digest: .sha256), data: digest)).code, .invalidKeyType)
        XCTAssertEqual(
            refused(.decrypt(key: pair.privateKey, mechanism: .pkcs1, data: [UInt8](repeating: 1, count: 256))).code,
            .invalidKeyType)
        let counters = try info(&alice)
        XCTAssertEqual(counters.ecdsaSignOperations, 0, "refused requests are not counted")
    }

    func testOwnershipFindKeysAndDeletion() throws {
        var alice = node.userSession("alice")
        var bob = node.userSession("bob")
        let pair = try generate(.p384, label: "shared-name", &alice)
        let aes = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "w", isSession: false, isExtractable: false),
                &alice
            ).handle)
        let digest = [UInt8](repeating: 9, count: 48)
        for request: HSMRequest in [
            .sign(key: pair.privateKey, mechanism: .ecdsa(digest: .sha384), data: digest),
            .getAttributes(pair.privateKey),
            .exportPublicKey(pair.publicKey), .deleteKey(pair.privateKey),
        ] {
            XCTAssertEqual(handler.code(request, &bob), .keyAccessDenied, "\(request.operation)")
        }
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter()), &bob).handles, [])
        XCTAssertEqual(
            handler.ok(.findKeys(KeyFilter(keyType: .ec)), &alice).handles, [pair.publicKey, pair.privateKey])
        XCTAssertEqual(
            handler.ok(.findKeys(KeyFilter(keyClass: .privateKey, keyType: .ec)), &alice).handles, [pair.privateKey])
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter(keyType: .rsa)), &alice).handles, [])
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter(keyType: .aes)), &alice).handles, [aes])

        _ = handler.ok(.deleteKey(pair.privateKey), &alice)
        XCTAssertEqual(
            handler.code(.sign(key: pair.privateKey, mechanism: .ecdsa(digest: .sha384), data: digest), &alice),
            .invalidHandle)
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter(keyType: .ec)), &alice).handles, [pair.publicKey])
        XCTAssertEqual(try node.state.store.keyRecord(handle: pair.privateKey)?.isDeleted, true)
    }

    func testTokenKeysAreSealedAtRestAndServeAfterARestart() throws {
        var alice = node.userSession("alice")
        let pair = try generate(.p521, isExtractable: true, &alice)
        let wrap = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 32, label: "w", isSession: false, isExtractable: false),
                &alice
            ).handle)
        let exported = try XCTUnwrap(handler.ok(.wrapKey(key: pair.privateKey, wrappingKey: wrap), &alice).bytes)
        guard case .secret(let kek) = try XCTUnwrap(node.state.object(wrap, sessionID: alice.id)).material else {
            return XCTFail("the wrapping key has no secret")
        }
        let pkcs8 = try AESKeyWrap.unwrap(wrappedKey: exported, kek: kek, context: sharedContext)
        let record = try XCTUnwrap(try node.state.store.keyRecord(handle: pair.privateKey))
        XCTAssertEqual(record.keyType, .ec)
        XCTAssertEqual(record.sizeInBits, 521)
        XCTAssertFalse(
            record.sealedMaterial.indices.contains { record.sealedMaterial[$0...].starts(with: pkcs8.suffix(32)) },
            "the private key is stored sealed, not in plaintext")

        try node.reopen()
        var again = node.userSession("alice")
        let digest = [UInt8](repeating: 1, count: 64)
        let signature = try XCTUnwrap(
            handler.ok(.sign(key: pair.privateKey, mechanism: .ecdsa(digest: .sha512), data: digest), &again).bytes)
        let spki = try XCTUnwrap(handler.ok(.exportPublicKey(pair.publicKey), &again).bytes)
        XCTAssertTrue(
            try ECPublicKey(publicKeyInfo: spki, context: sharedContext).verify(signature: signature, digest: digest))
        guard
            case .ecPrivate(let loaded) = try XCTUnwrap(node.state.object(pair.privateKey, sessionID: again.id))
                .material
        else { return XCTFail("not loaded as an EC private key") }
        XCTAssertEqual(try loaded.pkcs8DER(), pkcs8)
    }

    func testImportThroughWrapAndUnwrapAndWrapKey() throws {
        var alice = node.userSession("alice")
        let wrap = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(
                    keyType: .aes, byteCount: 16, label: "wrapping_key_for_import", isSession: true,
                    isExtractable: false), &alice
            ).handle)
        func unwrap(_ der: [UInt8], isExtractable: Bool = false) -> HSMResponse {
            let wrapped = handler.ok(.wrapHostKey(wrappingKey: wrap, keyData: der), &alice).bytes ?? []
            return handler.handle(
                .unwrapKey(
                    wrappingKey: wrap, wrappedKey: wrapped, label: "imported", isSession: false,
                    isExtractable: isExtractable), session: &alice)
        }
        let before = try node.state.store.keyRecords().count
        // SEC1 (what `openssl ecparam -genkey` writes) and PKCS#8, P-256 and P-384.
        let sec1 = try XCTUnwrap(Data(base64Encoded: Self.sec1Base64)).map { $0 }
        let hostKey = try ECPrivateKey.generate(curve: .p384, context: sharedContext)
        for (der, curve) in [(sec1, ECCurve.p256), (try hostKey.pkcs8DER(), .p384)] {
            let response = unwrap(der)
            XCTAssertEqual(response.code, .success, response.detail)
            let handle = try XCTUnwrap(response.body.handle)
            let imported = try attributes(handle, &alice)
            XCTAssertEqual(imported.keyType, .ec)
            XCTAssertEqual(imported.keyClass, .privateKey)
            XCTAssertEqual(ECCurve(publicKeyInfo: imported.publicKeyInfo), curve)
            let digest = [UInt8](repeating: 2, count: 32)
            let signature = try XCTUnwrap(
                handler.ok(.sign(key: handle, mechanism: .ecdsa(digest: .sha256), data: digest), &alice).bytes)
            XCTAssertTrue(
                try ECPublicKey(publicKeyInfo: imported.publicKeyInfo, context: sharedContext).verify(
                    signature: signature, digest: digest))
            XCTAssertEqual(handler.code(.wrapKey(key: handle, wrappingKey: wrap), &alice), .keyNotExtractable)
        }
        XCTAssertEqual(
            try attributes(try XCTUnwrap(unwrap(try hostKey.pkcs8DER()).body.handle), &alice).publicKeyInfo,
            hostKey.publicKeyInfo)
        let stored = try node.state.store.keyRecords().count
        XCTAssertEqual(stored, before + 3, "one private key object per import")

        // An extractable EC key comes back out as PKCS#8, wrapped.
        let exportable = try XCTUnwrap(unwrap(try hostKey.pkcs8DER(), isExtractable: true).body.handle)
        let exported = try XCTUnwrap(handler.ok(.wrapKey(key: exportable, wrappingKey: wrap), &alice).bytes)
        guard case .secret(let kek) = try XCTUnwrap(node.state.object(wrap, sessionID: alice.id)).material else {
            return XCTFail("the wrapping key has no secret")
        }
        let der = try AESKeyWrap.unwrap(wrappedKey: exported, kek: kek, context: sharedContext)
        XCTAssertEqual(try ECPrivateKey(der: der, context: sharedContext).publicKeyInfo, hostKey.publicKeyInfo)

        // A curve the HSMs do not hold, and a key whose public point is another key's.
        let k1 = unwrap(try XCTUnwrap(Data(base64Encoded: Self.secp256k1Base64)).map { $0 })
        XCTAssertEqual(k1.code, .invalidArgument)
        XCTAssertTrue(k1.detail.contains("curve not supported: secp256k1"), k1.detail)
        let otherPoint = try ECPrivateKey.generate(curve: .p256, context: sharedContext).publicKey().encodedPoint
        let mismatched = unwrap(Array(sec1.dropLast(otherPoint.count)) + otherPoint)
        XCTAssertEqual(mismatched.code, .invalidKeyData)
        XCTAssertTrue(mismatched.detail.contains("public point does not match"), mismatched.detail)
        XCTAssertEqual(try node.state.store.keyRecords().count, stored + 1, "nothing is stored on failure")
    }

    func testKeysReplicateToAPeerAsRSAKeysDo() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        a.state.replication = LoopbackReplication(minNodes: 2, peers: [b.state])
        var userA = a.userSession("cu")
        var userB = b.userSession("cu")
        let pair = try XCTUnwrap(
            a.handler.ok(
                .generateECKeyPair(curve: .p256, label: "replicated", isSession: false, isExtractable: false), &userA
            ).pair)
        XCTAssertEqual(
            b.handler.ok(.findKeys(KeyFilter(keyType: .ec)), &userB).handles, [pair.publicKey, pair.privateKey])
        let digest = [UInt8](repeating: 3, count: 32)
        let signature = try XCTUnwrap(
            b.handler.ok(.sign(key: pair.privateKey, mechanism: .ecdsa(digest: .sha256), data: digest), &userB).bytes)
        let spki = try XCTUnwrap(a.handler.ok(.exportPublicKey(pair.privateKey), &userA).bytes)
        XCTAssertEqual(b.handler.ok(.exportPublicKey(pair.privateKey), &userB).bytes, spki)
        XCTAssertTrue(
            try ECPublicKey(publicKeyInfo: spki, context: sharedContext).verify(signature: signature, digest: digest))
        // Sealed under b's own master key, and still there after b restarts.
        XCTAssertNotEqual(
            try a.state.store.keyRecord(handle: pair.privateKey)?.sealedMaterial,
            try b.state.store.keyRecord(handle: pair.privateKey)?.sealedMaterial)
        try b.reopen()
        userB = b.userSession("cu")
        XCTAssertEqual(
            b.handler.code(.sign(key: pair.privateKey, mechanism: .ecdsa(digest: .sha256), data: digest), &userB),
            .success)
        // A delete on the peer comes back as a tombstone.
        b.state.replication = LoopbackReplication(minNodes: 2, peers: [a.state])
        _ = b.handler.ok(.deleteKey(pair.privateKey), &userB)
        XCTAssertEqual(a.handler.code(.getAttributes(pair.privateKey), &userA), .invalidHandle)
        // Session EC keys stay on their node.
        let session = try XCTUnwrap(
            a.handler.ok(
                .generateECKeyPair(curve: .p384, label: "s", isSession: true, isExtractable: false), &userA
            ).pair)
        XCTAssertNil(try b.state.store.keyRecord(handle: session.privateKey))
    }

    /// `openssl ecparam -name prime256v1 -genkey -noout -outform DER`: SEC1, P-256.
    static let sec1Base64 =
        "MHcCAQEEIKNMVTWejS38VIt84sH3PZmULzFjH4Rr5fssM83xJQjVoAoGCCqGSM49AwEHoUQDQgAE6q8ipJFi2iufap+JVD2GbH92X0H5wOfFbLWSbAU5Yn/JVkDRGEO0nVJ5aBBtWaGV9NQ+dnrEWtp7wDyswn2PLQ=="
    /// `openssl ecparam -name secp256k1 -genkey -noout -outform DER`.
    static let secp256k1Base64 =
        "MHQCAQEEIEEgVPS2B3AJXnmU9CE40ga8mInz1bxcZmy29obQBm9DoAcGBSuBBAAKoUQDQgAE6FNfgIzakYhtvuLArm8H6NBmTeJZUSD2PiOHoEZIZSo4rHmeET7+Mn2i+Y8m+LHkyrnfI3DOLCDg8Agcm5HBDg=="
}
