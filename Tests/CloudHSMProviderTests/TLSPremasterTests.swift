// TLS 1.2's RSA key exchange: a premaster secret encrypted by a client decrypts to itself;
// anything wrong with its padding or version gives the 48 random bytes instead, never an
// error (implicit rejection); what is not the padding's fault is an error. The raw RSA
// operation here is OpenSSLKit's, standing in for the HSM's.

import CloudHSMCore
import OpenSSLKit
import XCTest

@testable import CloudHSMProvider

final class TLSPremasterTests: XCTestCase {
    typealias Support = ProviderTestSupport

    private let random = [UInt8](repeating: 0xA5, count: 48)

    private func premaster(version: UInt16 = 0x0303) -> [UInt8] {
        [UInt8(version >> 8), UInt8(version & 0xff)] + (0..<46).map { UInt8($0) }
    }

    private func encrypted(_ message: [UInt8]) throws -> [UInt8] {
        try Support.rsaKey.publicKey().encrypt(message, mechanism: .pkcs1)
    }

    private func secret(_ ciphertext: [UInt8], client: UInt32 = 0x0303, negotiated: UInt32 = 0) throws -> [UInt8] {
        try TLSPremaster.secret(
            ciphertext: ciphertext, keySize: 256, clientVersion: client, negotiatedVersion: negotiated, random: random
        ) { try Support.rsaKey.decrypt($0, mechanism: .raw) }
    }

    func testAWellFormedPremasterDecryptsToItself() throws {
        let message = premaster()
        XCTAssertEqual(try secret(encrypted(message)), message)
    }

    func testAWrongVersionGivesTheRandomBytes() throws {
        XCTAssertEqual(try secret(encrypted(premaster(version: 0x0302))), random)
        // Old clients with the rollback bug send the negotiated version instead.
        let rolledBack = premaster(version: 0x0302)
        XCTAssertEqual(try secret(encrypted(rolledBack), negotiated: 0x0302), rolledBack)
    }

    func testBadPaddingGivesTheRandomBytes() throws {
        var corrupted = try encrypted(premaster())
        corrupted[100] ^= 0x01
        XCTAssertEqual(try secret(corrupted), random)
        XCTAssertEqual(try secret(encrypted([0x03, 0x03] + [UInt8](repeating: 1, count: 45))), random, "47 bytes")
        XCTAssertEqual(try secret(encrypted([0x03, 0x03] + [UInt8](repeating: 1, count: 47))), random, "49 bytes")
    }

    func testACiphertextOfTheWrongSizeGivesTheRandomBytesWithoutAnHSMOperation() throws {
        var asked = false
        let answer = try TLSPremaster.secret(
            ciphertext: [UInt8](repeating: 1, count: 255), keySize: 256, clientVersion: 0x0303, negotiatedVersion: 0,
            random: random
        ) { _ in
            asked = true
            return []
        }
        XCTAssertEqual(answer, random)
        XCTAssertFalse(asked)
    }

    func testWhatIsNotThePaddingsFaultIsAnError() throws {
        let ciphertext = try encrypted(premaster())
        assertRefused(.invalidInput, "needs the client version") { try secret(ciphertext, client: 0) }
        assertRefused(.hsmOperationFailed, "returned 255 bytes for a 256-byte key") {
            try TLSPremaster.secret(
                ciphertext: ciphertext, keySize: 256, clientVersion: 0x0303, negotiatedVersion: 0, random: random
            ) { _ in [UInt8](repeating: 0, count: 255) }
        }
    }
}
