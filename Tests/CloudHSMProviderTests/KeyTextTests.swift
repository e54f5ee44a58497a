// What the text encoder writes for each selection: an HSM key asked for its private key
// says what it is (its reference), one asked for its public key alone reads exactly as the
// default provider's text of the same public key, and so does a public-only key.

import CloudHSMCore
import OpenSSLKit
import XCTest

@testable import CloudHSMProvider

final class KeyTextTests: XCTestCase {
    typealias Support = ProviderTestSupport

    /// `OPENSSL_CONF=/dev/null openssl pkey -pubin -inform DER -text -noout` of
    /// `Support.ecPublicKeyInfo`.
    static let ecPublicText = """
        Public-Key: (256 bit)
        pub:
            04:65:99:20:8e:a4:c1:63:84:93:0e:92:6b:77:fc:
            ce:5b:ce:39:6c:45:ce:e4:9a:5c:43:23:2c:9d:27:
            e5:8e:1b:b4:27:e6:bf:e4:3b:df:5a:b9:f7:a8:05:
            ba:a0:6e:dc:78:9d:f2:18:c5:d6:58:9b:98:14:88:
            6e:f2:59:29:72
        ASN1 OID: prime256v1
        NIST CURVE: P-256

        """

    func testThePublicSelectionOfAnECKeyIsTheDefaultProvidersText() throws {
        let key = try ProviderKey(reference: Support.reference(Support.ecPublicKeyInfo))
        let publicKey = Selection.publicKey | Selection.domainParameters
        XCTAssertEqual(try KeyReferenceEncoder.text(key, selection: publicKey), Self.ecPublicText)
        XCTAssertEqual(try KeyReferenceEncoder.text(key, selection: Selection.publicKey), Self.ecPublicText)
    }

    func testThePrivateSelectionSaysWhatTheKeyIs() throws {
        let key = try ProviderKey(reference: Support.reference(Support.ecPublicKeyInfo, handle: 77))
        let text = try KeyReferenceEncoder.text(key, selection: Selection.keyPair | Selection.domainParameters)
        XCTAssertTrue(text.hasPrefix("CloudHSM EC private key reference: (256 bit, curve P-256 (prime256v1))\n"), text)
        XCTAssertTrue(
            text.contains("\nhandle: 77\nlabel: unit\n(the private key stays in the HSM cluster)\npub:\n"), text)
        XCTAssertTrue(text.hasSuffix("ASN1 OID: prime256v1\nNIST CURVE: P-256\n"), text)
    }

    func testAnRSAKeysPublicTextHasItsModulusAndExponent() throws {
        let key = try Support.rsaProviderKey()
        let text = try KeyReferenceEncoder.text(key, selection: Selection.publicKey)
        let modulus = Support.rsaKey.modulus.map { String(format: "%02x", $0) }.joined(separator: ":")
        XCTAssertTrue(text.hasPrefix("Public-Key: (2048 bit)\nModulus:\n    00:"), text)
        XCTAssertTrue(text.hasSuffix("\nExponent: 65537 (0x10001)\n"), text)
        // The modulus shown, its lines each ending in ':' but the last, is the key's.
        let lines = text.split(separator: "\n").dropFirst(2).dropLast()
        XCTAssertEqual(lines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(), "00:" + modulus)
        XCTAssertFalse(text.contains("reference"), text)
    }

    func testAPublicOnlyKeyIsTheDefaultProvidersTextForEverySelection() throws {
        let referenced = try ProviderKey(reference: Support.reference(Support.ecPublicKeyInfo))
        let imported = try ProviderKey(type: ECKeyType.self, importing: referenced.publicParameters)
        XCTAssertEqual(try KeyReferenceEncoder.text(imported, selection: Selection.keyPair), Self.ecPublicText)
        XCTAssertEqual(try KeyReferenceEncoder.text(imported, selection: Selection.publicKey), Self.ecPublicText)
    }
}
