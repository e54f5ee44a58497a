// The fake PEM codec: the DER structure of DESIGN.md, PEM wrapping, other PEM blocks in
// the same file, and clear errors for corrupt, truncated and foreign input.

import XCTest

@testable import CloudHSMCore

final class KeyReferenceTests: XCTestCase {
    /// A real RSA-2048 SubjectPublicKeyInfo would do; any DER SEQUENCE stands in for it here.
    let spki: [UInt8] = [0x30, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]

    func testRoundTripWithAndWithoutLabel() throws {
        for label in ["web_server_imported_key", nil] as [String?] {
            let reference = KeyReference(
                clusterID: "local-dev", handle: 0x1_0000_0020, publicKeyInfo: spki, label: label)
            let pem = reference.pemEncoded()
            XCTAssertTrue(pem.hasPrefix("-----BEGIN CLOUDHSM KEY REFERENCE-----\n"))
            XCTAssertTrue(pem.hasSuffix("-----END CLOUDHSM KEY REFERENCE-----\n"))
            XCTAssertFalse(pem.contains("PRIVATE KEY"))
            XCTAssertEqual(try KeyReference(pem: pem), reference)
            XCTAssertEqual(try KeyReference(der: reference.derEncoded()), reference)
        }
    }

    func testDERLayoutMatchesTheDesign() {
        let der = KeyReference(clusterID: "c", handle: 128, publicKeyInfo: spki, label: "l").derEncoded()
        // SEQUENCE { INTEGER 1, UTF8String "c", INTEGER 128 (with a leading zero), SPKI, UTF8String "l" }
        let body: [UInt8] = [0x02, 0x01, 0x01, 0x0c, 0x01, 0x63, 0x02, 0x02, 0x00, 0x80] + spki + [0x0c, 0x01, 0x6c]
        XCTAssertEqual(der, [0x30, UInt8(body.count)] + body)
    }

    func testFoundAmongOtherPEMBlocks() throws {
        let reference = KeyReference(clusterID: "local-dev", handle: 8, publicKeyInfo: spki)
        let combined = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" + reference.pemEncoded()
        XCTAssertTrue(KeyReference.isPresent(in: combined))
        XCTAssertEqual(try KeyReference(pem: combined), reference)
    }

    func testBadInputNamesTheProblem() {
        XCTAssertThrowsError(try KeyReference(pem: "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")) {
            XCTAssertEqual($0 as? KeyReferenceError, .notAKeyReference)
        }
        let pem = KeyReference(clusterID: "x", handle: 1, publicKeyInfo: spki).pemEncoded()
        let lines = pem.split(separator: "\n")
        XCTAssertThrowsError(try KeyReference(pem: lines.dropLast().joined(separator: "\n"))) {
            XCTAssertEqual($0 as? KeyReferenceError, .malformed("the PEM block has no END line"))
        }
        XCTAssertThrowsError(
            try KeyReference(pem: "-----BEGIN CLOUDHSM KEY REFERENCE-----\n!!!\n-----END CLOUDHSM KEY REFERENCE-----\n")
        ) { XCTAssertEqual($0 as? KeyReferenceError, .malformed("the PEM block is not valid base64")) }
        let der = KeyReference(clusterID: "x", handle: 1, publicKeyInfo: spki).derEncoded()
        for length in 0..<der.count {
            XCTAssertThrowsError(try KeyReference(der: Array(der.prefix(length))), "prefix of \(length) bytes")
        }
        var version = der
        version[4] = 2
        XCTAssertThrowsError(try KeyReference(der: version)) {
            XCTAssertEqual($0 as? KeyReferenceError, .malformed("unsupported key reference version 2"))
        }
        XCTAssertThrowsError(try KeyReference(der: der + [0x00])) {
            XCTAssertEqual($0 as? KeyReferenceError, .malformed("bytes after the key reference"))
        }
    }

    func testBase64MatchesTheStandardAlphabetAndPadding() {
        XCTAssertEqual(Base64.encode(Array("foobar".utf8)), "Zm9vYmFy")
        XCTAssertEqual(Base64.encode(Array("fooba".utf8)), "Zm9vYmE=")
        XCTAssertEqual(Base64.encode(Array("foob".utf8)), "Zm9vYg==")
        XCTAssertEqual(Base64.decode("Zm9v\nYmE="), Array("fooba".utf8))
        XCTAssertNil(Base64.decode("Zm9"))
        XCTAssertNil(Base64.decode("Zm=v"))
        let bytes = (0..<300).map { UInt8(truncatingIfNeeded: $0 * 7) }
        XCTAssertEqual(Base64.decode(Substring(Base64.encode(bytes))), bytes)
    }
}
