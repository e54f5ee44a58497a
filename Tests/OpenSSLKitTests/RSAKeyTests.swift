// RSA private and public keys: generation, parsing of real key files, and every sign
// and decrypt mechanism the node serves, checked against the public half.

import CloudHSMCore
import XCTest

@testable import OpenSSLKit

final class RSAKeyTests: XCTestCase {
    static let context = try! CryptoContext()
    static let key = try! RSAPrivateKey.generate(bits: 2048, publicExponent: 65537, context: context)
    var context: CryptoContext { Self.context }
    var key: RSAPrivateKey { Self.key }

    func testGeneratedKeyHasRequestedShape() throws {
        XCTAssertEqual(key.modulusBits, 2048)
        let publicKey = try key.publicKey()
        XCTAssertEqual(publicKey.modulusBits, 2048)
        XCTAssertEqual(publicKey.publicExponent, [0x01, 0x00, 0x01])
        XCTAssertEqual(publicKey.modulus.count, 256)
        XCTAssertEqual(publicKey.publicKeyInfo, key.publicKeyInfo)
        let small = try RSAPrivateKey.generate(bits: 2048, publicExponent: 3, context: context)
        XCTAssertEqual(try small.publicKey().publicExponent, [3])
    }

    func testGenerateRejectsBadExponent() {
        XCTAssertThrowsError(try RSAPrivateKey.generate(bits: 2048, publicExponent: 65536, context: context))
        XCTAssertThrowsError(try RSAPrivateKey.generate(bits: 2048, publicExponent: 1, context: context))
    }

    func testPKCS8RoundTripKeepsTheKey() throws {
        let der = try key.pkcs8DER()
        let again = try RSAPrivateKey(der: der, context: context)
        XCTAssertEqual(again.publicKeyInfo, key.publicKeyInfo)
        let digest = try Digest.hash([1, 2, 3], algorithm: .sha256, context: context)
        let signature = try again.sign(digest: digest, mechanism: .pkcs1(digest: .sha256))
        XCTAssertTrue(
            try key.publicKey().verify(signature: signature, digest: digest, mechanism: .pkcs1(digest: .sha256)))
    }

    func testParsesPKCS1PEMFromOpenSSL() throws {
        let parsed = try RSAPrivateKey.parse(fileContents: Array(Fixtures.rsaPKCS1PEM.utf8), context: context)
        XCTAssertEqual(parsed.modulusBits, 1024)
        XCTAssertEqual(parsed.publicKeyInfo, Fixtures.hex(Fixtures.rsaPKCS1PublicKeyInfoHex))
        // Re-encoded as PKCS#8 PEM and as DER, it is the same key.
        let der = try parsed.pkcs8DER()
        let pem = try PEMBlock.write(label: "PRIVATE KEY", der: der)
        XCTAssertEqual(
            try RSAPrivateKey.parse(fileContents: Array(pem.utf8), context: context).publicKeyInfo,
            parsed.publicKeyInfo)
        XCTAssertEqual(try RSAPrivateKey.parse(fileContents: der, context: context).publicKeyInfo, parsed.publicKeyInfo)
    }

    func testRejectsNonRSAAndGarbage() {
        func message(_ bytes: [UInt8]) -> String {
            do {
                _ = try RSAPrivateKey.parse(fileContents: bytes, context: context)
                return "parsed"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(
            message(Array(Fixtures.ecPKCS8PEM.utf8)).contains("not an RSA key"),
            message(Array(Fixtures.ecPKCS8PEM.utf8)))
        XCTAssertTrue(message(Array("hello".utf8)).contains("invalid key data"))
        XCTAssertTrue(message([]).contains("invalid key data"))
        XCTAssertTrue(
            message(Array("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".utf8)).contains(
                "CERTIFICATE"))
        let reference = "-----BEGIN CLOUDHSM KEY REFERENCE-----\nMAA=\n-----END CLOUDHSM KEY REFERENCE-----\n"
        XCTAssertTrue(message(Array(reference.utf8)).contains("key reference"))
        // A valid key followed by junk is not accepted as DER.
        var der = (try? key.pkcs8DER()) ?? []
        der.append(0)
        XCTAssertThrowsError(try RSAPrivateKey(der: der, context: context))
        XCTAssertThrowsError(try RSAPublicKey(publicKeyInfo: [0x30, 0x00], context: context))
    }

    func testSignMechanismsVerify() throws {
        let publicKey = try key.publicKey()
        for algorithm in DigestAlgorithm.allCases where algorithm != .none {
            let digest = try Digest.hash(Array("message".utf8), algorithm: algorithm, context: context)
            let mechanisms: [SignMechanism] = [
                .pkcs1(digest: algorithm), .pss(digest: algorithm, mgf1Digest: .sha256, saltLength: 20),
                .pss(digest: algorithm, mgf1Digest: algorithm, saltLength: UInt32(algorithm.outputLength)),
            ]
            for mechanism in mechanisms {
                let signature = try key.sign(digest: digest, mechanism: mechanism)
                XCTAssertEqual(signature.count, 256)
                XCTAssertTrue(
                    publicKey.verify(signature: signature, digest: digest, mechanism: mechanism), "\(mechanism)")
                var tampered = digest
                tampered[0] ^= 1
                XCTAssertFalse(publicKey.verify(signature: signature, digest: tampered, mechanism: mechanism))
            }
        }
    }

    func testPKCS1SignatureIsDeterministicAndMatchesDigestInfo() throws {
        let digest = try Digest.hash([], algorithm: .sha256, context: context)
        let a = try key.sign(digest: digest, mechanism: .pkcs1(digest: .sha256))
        XCTAssertEqual(a, try key.sign(digest: digest, mechanism: .pkcs1(digest: .sha256)))
        // pkcs1 without a digest pads the given bytes: giving it the DigestInfo makes the same signature.
        let digestInfoPrefix: [UInt8] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ]
        XCTAssertEqual(a, try key.sign(digest: digestInfoPrefix + digest, mechanism: .pkcs1(digest: .none)))
        // Raw on the encrypted block gives back the padded block.
        let publicKey = try key.publicKey()
        let block = try publicKey.encrypt(a, mechanism: .raw)
        XCTAssertEqual(block.prefix(2), [0x00, 0x01])
        XCTAssertEqual(Array(block.suffix(51)), digestInfoPrefix + digest)
        XCTAssertEqual(try key.sign(digest: block, mechanism: .raw), a)
    }

    func testSignRejectsWrongLengths() {
        XCTAssertThrowsError(try key.sign(digest: [UInt8](repeating: 1, count: 31), mechanism: .pkcs1(digest: .sha256)))
        XCTAssertThrowsError(try key.sign(digest: [UInt8](repeating: 1, count: 255), mechanism: .raw))
        XCTAssertThrowsError(
            try key.sign(
                digest: [UInt8](repeating: 1, count: 32),
                mechanism: .pss(digest: .sha256, mgf1Digest: .sha256, saltLength: UInt32.max)))
        XCTAssertThrowsError(try key.sign(digest: [UInt8](repeating: 1, count: 246), mechanism: .pkcs1(digest: .none)))
    }

    func testDecryptMechanisms() throws {
        let publicKey = try key.publicKey()
        let message = Array("premaster secret".utf8)
        let mechanisms: [DecryptMechanism] = [
            .pkcs1, .oaep(digest: .sha1, mgf1Digest: .sha1, label: []),
            .oaep(digest: .sha256, mgf1Digest: .sha1, label: Array("label".utf8)),
        ]
        for mechanism in mechanisms {
            let ciphertext = try publicKey.encrypt(message, mechanism: mechanism)
            XCTAssertEqual(try key.decrypt(ciphertext, mechanism: mechanism), message, "\(mechanism)")
        }
        let oaep = try publicKey.encrypt(message, mechanism: .oaep(digest: .sha256, mgf1Digest: .sha256, label: [1]))
        XCTAssertThrowsError(try key.decrypt(oaep, mechanism: .oaep(digest: .sha256, mgf1Digest: .sha256, label: [2])))
        {
            XCTAssertEqual($0 as? CryptoError, .decryptFailed)
        }
        XCTAssertThrowsError(try key.decrypt(oaep, mechanism: .pkcs1)) {
            XCTAssertEqual($0 as? CryptoError, .decryptFailed)
        }
        var raw = [UInt8](repeating: 0, count: 256)
        raw[255] = 42
        let encrypted = try publicKey.encrypt(raw, mechanism: .raw)
        XCTAssertEqual(try key.decrypt(encrypted, mechanism: .raw), raw)
    }

    /// Decrypting operations are reused, per mechanism and OAEP label: mixing mechanisms,
    /// labels and failures never lets one request decrypt with another's settings.
    func testReusedDecryptionsKeepTheirMechanism() throws {
        let publicKey = try key.publicKey()
        let message = Array("premaster secret".utf8)
        let mechanisms: [DecryptMechanism] =
            [.pkcs1] + (0..<20).map { .oaep(digest: .sha256, mgf1Digest: .sha256, label: [UInt8($0)]) }
        let ciphertexts = try mechanisms.map { try publicKey.encrypt(message, mechanism: $0) }
        for round in 0..<3 {
            for (index, mechanism) in mechanisms.enumerated() {
                XCTAssertEqual(try key.decrypt(ciphertexts[index], mechanism: mechanism), message, "\(mechanism)")
                // Another label's ciphertext fails with this label's operation, even reused
                // (OAEP only: a PKCS#1 v1.5 check passes a random block now and then).
                guard index > 0 else { continue }
                let other = ciphertexts[1 + (index + round) % (ciphertexts.count - 1)]
                XCTAssertThrowsError(try key.decrypt(other, mechanism: mechanism), "\(mechanism)") {
                    XCTAssertEqual($0 as? CryptoError, .decryptFailed)
                }
            }
        }
    }

    func testConcurrentSigningOnOneKey() throws {
        let digest = try Digest.hash([9], algorithm: .sha256, context: context)
        let expected = try key.sign(digest: digest, mechanism: .pkcs1(digest: .sha256))
        let failures = Failures()
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                for _ in 0..<25
                where (try? Self.key.sign(digest: digest, mechanism: .pkcs1(digest: .sha256))) != expected {
                    failures.add()
                }
                done.leave()
            }
        }
        done.wait()
        XCTAssertEqual(failures.count, 0)
    }

    func testPublicKeyPEM() throws {
        let pem = try key.publicKey().pemEncoded()
        XCTAssertTrue(pem.hasPrefix("-----BEGIN PUBLIC KEY-----\n"))
        XCTAssertTrue(pem.hasSuffix("-----END PUBLIC KEY-----\n"))
        let blocks = try PEMBlock.readAll(Array(pem.utf8))
        XCTAssertEqual(blocks.first?.der, key.publicKeyInfo)
    }
}

final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add() { lock.withLock { value += 1 } }
    var count: Int { lock.withLock { value } }
}
