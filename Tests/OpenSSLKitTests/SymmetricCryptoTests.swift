// AES-GCM, AES key wrap with padding, PBKDF2, digests and random bytes, checked against
// published test vectors where there are some.

import CloudHSMCore
import XCTest

@testable import OpenSSLKit

final class SymmetricCryptoTests: XCTestCase {
    let context = try! CryptoContext()

    func testGCMRoundTripAndTampering() throws {
        let key = try SecureRandom.bytes(32, context: context)
        let sealed = try AESGCM.seal(
            plaintext: Array("secret".utf8), key: key, additionalData: [1, 2], context: context)
        XCTAssertEqual(sealed.count, 12 + 6 + 16)
        XCTAssertEqual(
            try AESGCM.open(sealed, key: key, additionalData: [1, 2], context: context), Array("secret".utf8))
        XCTAssertThrowsError(try AESGCM.open(sealed, key: key, additionalData: [1, 3], context: context)) {
            XCTAssertEqual($0 as? CryptoError, .authenticationFailed)
        }
        for index in [0, 12, sealed.count - 1] {
            var tampered = sealed
            tampered[index] ^= 0x80
            XCTAssertThrowsError(try AESGCM.open(tampered, key: key, additionalData: [1, 2], context: context))
        }
        XCTAssertThrowsError(try AESGCM.open(Array(sealed.prefix(20)), key: key, context: context))
        let other = try SecureRandom.bytes(32, context: context)
        XCTAssertThrowsError(try AESGCM.open(sealed, key: other, additionalData: [1, 2], context: context))
        // Empty plaintext still authenticates.
        let empty = try AESGCM.seal(plaintext: [], key: key, context: context)
        XCTAssertEqual(try AESGCM.open(empty, key: key, context: context), [])
        XCTAssertThrowsError(try AESGCM.seal(plaintext: [1], key: [1, 2, 3], context: context))
    }

    func testKeyWrapRFC5649Vectors() throws {
        let kek = Fixtures.hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
        let key20 = Fixtures.hex("c37b7e6492584340bed12207808941155068f738")
        let wrapped20 = Fixtures.hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a")
        XCTAssertEqual(try AESKeyWrap.wrap(key: key20, kek: kek, context: context), wrapped20)
        XCTAssertEqual(try AESKeyWrap.unwrap(wrappedKey: wrapped20, kek: kek, context: context), key20)
        let key7 = Fixtures.hex("466f7250617369")
        let wrapped7 = Fixtures.hex("afbeb0f07dfbf5419200f2ccb50bb24f")
        XCTAssertEqual(try AESKeyWrap.wrap(key: key7, kek: kek, context: context), wrapped7)
        XCTAssertEqual(try AESKeyWrap.unwrap(wrappedKey: wrapped7, kek: kek, context: context), key7)
    }

    func testKeyWrapAllSizesAndFailures() throws {
        let data = try SecureRandom.bytes(1217, context: context)
        for size in [16, 24, 32] {
            let kek = try SecureRandom.bytes(size, context: context)
            let wrapped = try AESKeyWrap.wrap(key: data, kek: kek, context: context)
            XCTAssertEqual(wrapped.count, (data.count + 7) / 8 * 8 + 8)
            XCTAssertEqual(try AESKeyWrap.unwrap(wrappedKey: wrapped, kek: kek, context: context), data)
            var tampered = wrapped
            tampered[5] ^= 1
            XCTAssertThrowsError(try AESKeyWrap.unwrap(wrappedKey: tampered, kek: kek, context: context)) {
                XCTAssertEqual($0 as? CryptoError, .unwrapFailed)
            }
            let otherKek = try SecureRandom.bytes(size, context: context)
            XCTAssertThrowsError(try AESKeyWrap.unwrap(wrappedKey: wrapped, kek: otherKek, context: context))
            XCTAssertThrowsError(try AESKeyWrap.unwrap(wrappedKey: [1, 2, 3], kek: kek, context: context))
        }
        XCTAssertThrowsError(try AESKeyWrap.wrap(key: data, kek: [1], context: context))
    }

    func testPBKDF2Vectors() throws {
        XCTAssertEqual(
            try PasswordHash.pbkdf2SHA256(
                password: Array("passwd".utf8), salt: Array("salt".utf8), iterations: 1, length: 64, context: context),
            Fixtures.hex(
                "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
            ))
        XCTAssertEqual(
            try PasswordHash.pbkdf2SHA256(
                password: Array("Password".utf8), salt: Array("NaCl".utf8), iterations: 80000, length: 64,
                context: context),
            Fixtures.hex(
                "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
            ))
        let empty = try PasswordHash.pbkdf2SHA256(password: [], salt: [], iterations: 2, length: 32, context: context)
        XCTAssertEqual(empty.count, 32)
        XCTAssertThrowsError(
            try PasswordHash.pbkdf2SHA256(password: [1], salt: [1], iterations: 0, length: 32, context: context))
    }

    func testDigestVectors() throws {
        let abc = Array("abc".utf8)
        XCTAssertEqual(
            try Digest.hash(abc, algorithm: .sha1, context: context),
            Fixtures.hex("a9993e364706816aba3e25717850c26c9cd0d89d"))
        XCTAssertEqual(
            try Digest.hash(abc, algorithm: .sha256, context: context),
            Fixtures.hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        for algorithm in DigestAlgorithm.allCases where algorithm != .none {
            XCTAssertEqual(try Digest.hash([], algorithm: algorithm, context: context).count, algorithm.outputLength)
        }
        XCTAssertThrowsError(try Digest.hash(abc, algorithm: .none, context: context))
    }

    func testRandom() throws {
        let a = try SecureRandom.bytes(32, context: context)
        let b = try SecureRandom.bytes(32, context: context)
        XCTAssertEqual(a.count, 32)
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(try SecureRandom.bytes(0, context: context), [])
        XCTAssertEqual(try SecureRandom.bytes(65536, context: context).count, 65536)
    }
}
