// How the decoders recognise a key reference and tell its key type from the
// SubjectPublicKeyInfo inside: RSA becomes an RSA key object; a key type the provider does
// not hold (EC for now, Ed25519) is refused with its name; a broken public key is a
// malformed reference. Nothing here asks an HSM.

import CloudHSMCore
import OpenSSLKit
import XCTest

@testable import CloudHSMProvider

final class KeyReferenceDetectionTests: XCTestCase {
    typealias Support = ProviderTestSupport

    func testOurDERIsRecognisedAndOthersAreNot() throws {
        let der = Support.reference(Support.rsaKey.publicKeyInfo).derEncoded()
        XCTAssertTrue(KeyReferenceDecoder.looksLikeKeyReference(der))
        XCTAssertEqual(KeyReferenceDecoder.derLength(der), der.count)
        XCTAssertFalse(KeyReferenceDecoder.looksLikeKeyReference(Support.rsaKey.publicKeyInfo), "an SPKI is not ours")
        XCTAssertFalse(KeyReferenceDecoder.looksLikeKeyReference(try Support.rsaKey.pkcs8DER()), "PKCS#8 is not ours")
        XCTAssertFalse(KeyReferenceDecoder.looksLikeKeyReference([0x30, 0x03, 0x02, 0x01]))
        XCTAssertNil(KeyReferenceDecoder.derLength([0x30]))
        XCTAssertEqual(KeyReferenceDecoder.derLength([0x30, 0x82, 0x01, 0x00]), 260)
    }

    func testAnRSAReferenceBecomesAnRSAKey() throws {
        let reference = Support.reference(Support.rsaKey.publicKeyInfo)
        XCTAssertTrue(try KeyReferenceDecoder.keyType(of: reference) == RSAKeyType.self)
        let key = try ProviderKey(reference: reference)
        XCTAssertTrue(key.type == RSAKeyType.self)
        XCTAssertTrue(key.isHSMKey)
        XCTAssertEqual(key.bits, 2048)
        XCTAssertEqual(key.size, 256)
        XCTAssertEqual(key.securityBits, 112)
        XCTAssertEqual(key.publicKeyInfo, Support.rsaKey.publicKeyInfo)
        XCTAssertEqual(key.bigNumber("n"), Support.rsaKey.modulus)
        XCTAssertEqual(key.bigNumber("e"), [1, 0, 1])
        XCTAssertTrue(
            try KeyReferenceEncoder.text(key, selection: Selection.keyPair).hasPrefix(
                "CloudHSM RSA private key reference: (2048 bit)\n"))
    }

    func testAPublicOnlyKeyFromItsParametersMatchesTheReferencedOne() throws {
        let referenced = try Support.rsaProviderKey()
        let imported = try ProviderKey(type: RSAKeyType.self, importing: referenced.publicParameters)
        XCTAssertFalse(imported.isHSMKey)
        XCTAssertTrue(imported.hasSamePublicKey(as: referenced))
        XCTAssertTrue(RSAKeyType.matches(imported, referenced, selection: Selection.publicKey))
        let other = try ProviderKey(
            type: RSAKeyType.self,
            importing: [.bigNumber("n", referenced.bigNumber("n")), .bigNumber("e", [3])])
        XCTAssertFalse(RSAKeyType.matches(other, referenced, selection: Selection.publicKey))
    }

    func testAnECReferenceIsAnECKey() throws {
        XCTAssertTrue(try KeyReferenceDecoder.keyType(of: Support.reference(Support.ecPublicKeyInfo)) == ECKeyType.self)
    }

    func testKeyTypesTheProviderDoesNotHoldAreRefusedByName() {
        assertRefused(.unsupported, "ED25519 keys are not supported by this provider yet (it holds RSA, EC keys)") {
            try KeyReferenceDecoder.keyType(of: Support.reference(Support.ed25519PublicKeyInfo))
        }
        assertRefused(.unsupported, "ED25519 keys are not supported by this provider yet") {
            try ProviderKey(reference: Support.reference(Support.ed25519PublicKeyInfo))
        }
    }

    func testABrokenPublicKeyIsAMalformedReference() {
        var broken = Support.rsaKey.publicKeyInfo
        broken.removeLast(10)
        assertRefused(.malformedKeyReference, "not a valid public key") {
            try KeyReferenceDecoder.keyType(of: Support.reference(broken))
        }
        assertRefused(.malformedKeyReference, "not a valid public key") {
            try ProviderKey(reference: Support.reference(Support.rsaKey.publicKeyInfo + [0]))
        }
    }
}
