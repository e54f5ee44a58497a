// PSS salt lengths: the words and numbers OpenSSL takes, and the lengths they mean when
// signing, held to OpenSSL's own signatures: a signature OpenSSL makes with "max" (or
// "auto", which signs with the maximum in 3.0) verifies with exactly the salt length the
// provider asks the HSM for, and with no other.

import COpenSSL
import CloudHSMCore
import OpenSSLKit
import XCTest

@testable import CloudHSMProvider

final class PSSSaltLengthTests: XCTestCase {
    typealias Support = ProviderTestSupport

    func testWordsAndNumbers() throws {
        for (text, length) in [
            ("digest", PSSSaltLength.digest), ("max", .maximum), ("auto", .auto), ("20", .bytes(20)),
            ("0", .bytes(0)), ("-1", .digest), ("-2", .auto), ("-3", .maximum),
        ] {
            XCTAssertEqual(try Support.reading([.string("saltlen", text)]) { try PSSSaltLength.read($0) }, length, text)
        }
        XCTAssertEqual(try Support.reading([.int("saltlen", -1)]) { try PSSSaltLength.read($0) }, .digest)
        XCTAssertEqual(try Support.reading([.int("saltlen", 32)]) { try PSSSaltLength.read($0) }, .bytes(32))
        assertRefused(.invalidInput, "'abc' is neither a number nor digest, max or auto") {
            try Support.reading([.string("saltlen", "abc")]) { try PSSSaltLength.read($0) }
        }
        assertRefused(.invalidInput, "-4 is invalid") {
            try Support.reading([.int("saltlen", -4)]) { try PSSSaltLength.read($0) }
        }
    }

    func testLengthsWhenSigning() throws {
        XCTAssertEqual(try PSSSaltLength.digest.length(digestLength: 32, keyBits: 2048), 32)
        XCTAssertEqual(try PSSSaltLength.maximum.length(digestLength: 32, keyBits: 2048), 222)
        XCTAssertEqual(try PSSSaltLength.auto.length(digestLength: 32, keyBits: 2048), 222)
        XCTAssertEqual(try PSSSaltLength.bytes(20).length(digestLength: 32, keyBits: 2048), 20)
        XCTAssertEqual(try PSSSaltLength.maximum.length(digestLength: 64, keyBits: 1024), 62)
        // A modulus of 8n+1 bits encodes in one byte less.
        XCTAssertEqual(try PSSSaltLength.maximum.length(digestLength: 32, keyBits: 1025), 94)
        assertRefused(.invalidInput, "does not fit a 2048-bit key with a 32-byte digest (at most 222)") {
            try PSSSaltLength.bytes(223).length(digestLength: 32, keyBits: 2048)
        }
    }

    /// OpenSSL signs `digest` with a fresh key of `bits` and salt length `saltLength`
    /// (one of RSA_PSS_SALTLEN_*); answers the signature and the public key.
    private func openSSLSignature(bits: Int, digest: [UInt8], saltLength: Int32) throws -> ([UInt8], RSAPublicKey) {
        let context = Support.context
        let generation = try XCTUnwrap(EVP_PKEY_CTX_new_from_name(context.pointer, "RSA", nil))
        defer { EVP_PKEY_CTX_free(generation) }
        var key: OpaquePointer? = nil
        XCTAssertEqual(EVP_PKEY_keygen_init(generation), 1)
        XCTAssertEqual(EVP_PKEY_CTX_set_rsa_keygen_bits(generation, Int32(bits)), 1)
        XCTAssertEqual(EVP_PKEY_generate(generation, &key), 1)
        defer { EVP_PKEY_free(key) }
        let signing = try XCTUnwrap(EVP_PKEY_CTX_new_from_pkey(context.pointer, key, nil))
        defer { EVP_PKEY_CTX_free(signing) }
        let sha256 = try XCTUnwrap(EVP_MD_fetch(context.pointer, "SHA256", nil))
        defer { EVP_MD_free(sha256) }
        XCTAssertEqual(EVP_PKEY_sign_init(signing), 1)
        XCTAssertEqual(EVP_PKEY_CTX_set_rsa_padding(signing, RSA_PKCS1_PSS_PADDING), 1)
        XCTAssertEqual(EVP_PKEY_CTX_set_signature_md(signing, sha256), 1)
        XCTAssertEqual(EVP_PKEY_CTX_set_rsa_pss_saltlen(signing, saltLength), 1)
        var length = 0
        XCTAssertEqual(EVP_PKEY_sign(signing, nil, &length, digest, digest.count), 1)
        var signature = [UInt8](repeating: 0, count: length)
        XCTAssertEqual(EVP_PKEY_sign(signing, &signature, &length, digest, digest.count), 1)
        var der: UnsafeMutablePointer<UInt8>? = nil
        let derLength = i2d_PUBKEY(key, &der)
        defer { CRYPTO_free(der, nil, 0) }
        let spki = Array(UnsafeBufferPointer(start: der, count: Int(derLength)))
        return (Array(signature.prefix(length)), try RSAPublicKey(publicKeyInfo: spki, context: context))
    }

    func testMaximumAndAutoAreTheLengthsOpenSSLSignsWith() throws {
        let digest = [UInt8](repeating: 0x5a, count: 32)
        for bits in [1024, 1025, 2048] {
            for rule in [(PSSSaltLength.maximum, RSA_PSS_SALTLEN_MAX), (.auto, RSA_PSS_SALTLEN_AUTO)] {
                let (signature, publicKey) = try openSSLSignature(bits: bits, digest: digest, saltLength: rule.1)
                let length = try rule.0.length(digestLength: 32, keyBits: bits)
                let exact = SignMechanism.pss(digest: .sha256, mgf1Digest: .sha256, saltLength: UInt32(length))
                XCTAssertTrue(
                    publicKey.verify(signature: signature, digest: digest, mechanism: exact), "\(bits) \(rule.0)")
                let shorter = SignMechanism.pss(digest: .sha256, mgf1Digest: .sha256, saltLength: UInt32(length - 1))
                XCTAssertFalse(publicKey.verify(signature: signature, digest: digest, mechanism: shorter))
            }
        }
    }

    func testDigestAndExplicitLengthsAreWhatOpenSSLSignsWith() throws {
        let digest = [UInt8](repeating: 0x33, count: 32)
        for (rule, value) in [(PSSSaltLength.digest, RSA_PSS_SALTLEN_DIGEST), (.bytes(17), Int32(17)), (.bytes(0), 0)] {
            let (signature, publicKey) = try openSSLSignature(bits: 2048, digest: digest, saltLength: value)
            let length = try rule.length(digestLength: 32, keyBits: 2048)
            XCTAssertTrue(
                publicKey.verify(
                    signature: signature, digest: digest,
                    mechanism: .pss(digest: .sha256, mgf1Digest: .sha256, saltLength: UInt32(length))), "\(rule)")
        }
    }
}
