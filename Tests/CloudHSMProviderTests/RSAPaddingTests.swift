// RSA padding modes as words and numbers, and what the RSA signature and decryption
// settings make of each: the modes the default provider takes are taken with the same
// meaning; what the HSMs cannot do, or what OpenSSL itself refuses, is refused by name.

import COpenSSL
import CloudHSMCore
import XCTest

@testable import CloudHSMProvider

final class RSAPaddingTests: XCTestCase {
    typealias Support = ProviderTestSupport

    func testNumbersAreOpenSSLs() {
        XCTAssertEqual(RSAPadding.pkcs1.rawValue, RSA_PKCS1_PADDING)
        XCTAssertEqual(RSAPadding.none.rawValue, RSA_NO_PADDING)
        XCTAssertEqual(RSAPadding.oaep.rawValue, RSA_PKCS1_OAEP_PADDING)
        XCTAssertEqual(RSAPadding.x931.rawValue, RSA_X931_PADDING)
        XCTAssertEqual(RSAPadding.pss.rawValue, RSA_PKCS1_PSS_PADDING)
        XCTAssertEqual(RSAPadding.tls.rawValue, RSA_PKCS1_WITH_TLS_PADDING)
    }

    func testModesReadAsWordsAndNumbers() throws {
        for (word, mode) in [
            ("pkcs1", RSAPadding.pkcs1), ("pss", .pss), ("none", .none), ("oaep", .oaep), ("oeap", .oaep),
            ("x931", .x931),
        ] {
            XCTAssertEqual(try Support.reading([.string("pad-mode", word)]) { try RSAPadding.read($0) }, mode, word)
        }
        for mode in RSAPadding.allCases {
            XCTAssertEqual(
                try Support.reading([.int("pad-mode", Int(mode.rawValue))]) { try RSAPadding.read($0) }, mode)
        }
        XCTAssertNil(try Support.reading([.string("digest", "SHA256")]) { try RSAPadding.read($0) })
        assertRefused(.unsupported, "'pkcs1v15' is unknown") {
            try Support.reading([.string("pad-mode", "pkcs1v15")]) { try RSAPadding.read($0) }
        }
        assertRefused(.unsupported, "99 is unknown") {
            try Support.reading([.int("pad-mode", 99)]) { try RSAPadding.read($0) }
        }
    }

    func testModesAreAnsweredInTheFormAsked() throws {
        let answered = try Support.answers([.string("pad-mode")]) { try RSAPadding.pss.write($0) }
        XCTAssertEqual(answered["pad-mode"], "pss")
        let number = try Support.answers([.int("pad-mode")]) { try RSAPadding.pss.write($0) }
        XCTAssertEqual(number["pad-mode"], "6")
        XCTAssertEqual(try Support.answers([.int("pad-mode")]) { try RSAPadding.tls.write($0) }["pad-mode"], "7")
        assertRefused(.unsupported, "has no name") {
            try Support.answers([.string("pad-mode")]) { try RSAPadding.tls.write($0) }
        }
    }

    // MARK: Signatures

    private func signing(_ steps: [[ParamValue]], digest: HSMDigest? = nil, fixed: Bool = false) throws
        -> (RSASignatureScheme, HSMDigest?)
    {
        var scheme = RSASignatureScheme()
        var digest = digest
        for step in steps {
            try Support.reading(step) { try scheme.apply($0, digest: &digest, digestIsFixed: fixed, properties: nil) }
        }
        return (scheme, digest)
    }

    func testSignatureTakesPKCS1PSSAndNone() throws {
        XCTAssertEqual(try signing([]).0.padding, .pkcs1)
        XCTAssertEqual(try signing([[.string("pad-mode", "none")]]).0.padding, .none)
        let (pss, digest) = try signing([[.int("pad-mode", 6)]])
        XCTAssertEqual(pss.padding, .pss)
        XCTAssertEqual(digest, .sha1, "PSS with no digest set uses SHA-1, as the default provider does")
    }

    func testSignatureRefusesWhatTheHSMsOrOpenSSLDoNot() {
        assertRefused(.unsupported, "OAEP padding is for encryption") {
            try signing([[.string("pad-mode", "oaep")]])
        }
        assertRefused(.unsupported, "not X9.31") { try signing([[.string("pad-mode", "x931")]]) }
        assertRefused(.unsupported, "is for decryption") { try signing([[.int("pad-mode", 7)]]) }
        assertRefused(.unsupported, "PSS saltlen can only be specified if PSS padding has been specified first") {
            try signing([[.string("saltlen", "20")], [.string("pad-mode", "pss")]])
        }
        assertRefused(.unsupported, "mgf1-digest can only be specified with PSS padding") {
            try signing([[.string("mgf1-digest", "SHA256")]])
        }
        assertRefused(.invalidInput, "takes no digest") {
            try signing([[.string("digest", "SHA256")], [.string("pad-mode", "none")]])
        }
        assertRefused(.unsupported, "SHA3-256 for RSA signatures: the HSMs take SHA-1, SHA-224") {
            try signing([[.string("digest", "SHA3-256")]])
        }
        assertRefused(.unsupported, "PSS with MD5-SHA1") {
            try signing([[.string("digest", "MD5-SHA1")], [.string("pad-mode", "pss")]])
        }
        assertRefused(.unsupported, "cannot change") {
            try signing([[.string("digest", "SHA384")]], digest: .sha256, fixed: true)
        }
    }

    func testSignatureSettingsAreAnsweredAsTheDefaultProviderAnswersThem() throws {
        let (scheme, digest) = try signing([
            [.string("digest", "sha384")], [.string("pad-mode", "pss")], [.string("mgf1-digest", "SHA2-512")],
            [.string("saltlen", "digest")],
        ])
        let answered = try Support.answers([
            .string("pad-mode"), .string("digest"), .string("mgf1-digest"), .string("saltlen"),
        ]) { try scheme.answer($0, digest: digest) }
        XCTAssertEqual(
            answered, ["pad-mode": "pss", "digest": "sha384", "mgf1-digest": "SHA2-512", "saltlen": "digest"])
        let numbers = try Support.answers([.int("pad-mode"), .int("saltlen")]) { try scheme.answer($0, digest: digest) }
        XCTAssertEqual(numbers, ["pad-mode": "6", "saltlen": "-1"])
    }

    func testSignatureMechanisms() throws {
        let key = try Support.rsaProviderKey()
        let digest32 = [UInt8](repeating: 7, count: 32)
        XCTAssertEqual(try signing([]).0.mechanism(for: digest32, digest: nil, key: key), .pkcs1(digest: .none))
        XCTAssertEqual(try signing([]).0.mechanism(for: digest32, digest: .sha256, key: key), .pkcs1(digest: .sha256))
        XCTAssertEqual(
            try signing([]).0.mechanism(for: [UInt8](repeating: 1, count: 36), digest: .md5SHA1, key: key),
            .pkcs1(digest: .none), "MD5-SHA1 is signed without a DigestInfo, as TLS 1.0 and 1.1 sign it")
        let (pss, _) = try signing([[.string("pad-mode", "pss")], [.string("saltlen", "digest")]])
        XCTAssertEqual(
            try pss.mechanism(for: digest32, digest: .sha256, key: key),
            .pss(digest: .sha256, mgf1Digest: .sha256, saltLength: 32))
        assertRefused(.invalidInput, "input is 20 bytes, not a SHA2-256 digest") {
            try pss.mechanism(for: [UInt8](repeating: 0, count: 20), digest: .sha256, key: key)
        }
        let (raw, _) = try signing([[.string("pad-mode", "none")]])
        assertRefused(.invalidInput, "raw input is not smaller than the modulus") {
            try raw.mechanism(for: [UInt8](repeating: 0xff, count: 256), digest: nil, key: key)
        }
        XCTAssertEqual(try raw.mechanism(for: [0] + [UInt8](repeating: 0xff, count: 255), digest: nil, key: key), .raw)
    }

    // MARK: Decryption

    private func decrypting(_ values: [ParamValue]) throws -> RSADecryptionSettings {
        var settings = RSADecryptionSettings()
        try Support.reading(values) { try settings.apply($0, properties: nil) }
        return settings
    }

    func testDecryptionTakesPKCS1OAEPNoneAndTLS() throws {
        XCTAssertEqual(try decrypting([]).mechanism(), .pkcs1)
        XCTAssertEqual(try decrypting([.string("pad-mode", "none")]).mechanism(), .raw)
        XCTAssertEqual(
            try decrypting([.string("pad-mode", "oaep")]).mechanism(),
            .oaep(digest: .sha1, mgf1Digest: .sha1, label: []))
        XCTAssertEqual(
            try decrypting([.string("pad-mode", "oeap"), .string("digest", "SHA256"), .string("mgf1-digest", "SHA1")])
                .mechanism(),
            .oaep(digest: .sha256, mgf1Digest: .sha1, label: []))
        let tls = try decrypting([.int("pad-mode", 7), .int("tls-client-version", 0x0303)])
        XCTAssertEqual(tls.padding, .tls)
        XCTAssertEqual(tls.clientVersion, 0x0303)
        let labelled = try Support.reading(octets: "oaep-label", [1, 2, 3]) { reader -> RSADecryptionSettings in
            var settings = RSADecryptionSettings()
            try settings.apply(reader, properties: nil)
            return settings
        }
        XCTAssertEqual(labelled.oaepLabel, [1, 2, 3])
    }

    func testDecryptionRefusesWhatTheHSMsDoNotDecryptWith() throws {
        assertRefused(.unsupported, "PSS padding is for signatures") { try decrypting([.string("pad-mode", "pss")]) }
        assertRefused(.unsupported, "not X9.31") { try decrypting([.string("pad-mode", "x931")]) }
        // An OAEP digest the HSMs lack is refused when OAEP needs it, not before: with
        // PKCS#1 padding the default provider does not use it either.
        let unused = try decrypting([.string("digest", "SHA3-256")])
        XCTAssertEqual(try unused.mechanism(), .pkcs1)
        let answered = try Support.answers([.string("digest"), .string("mgf1-digest")]) {
            try unused.answer($0, labelStorage: nil)
        }
        XCTAssertEqual(answered, ["digest": "SHA3-256", "mgf1-digest": "SHA3-256"])
        assertRefused(.unsupported, "SHA3-256 for OAEP decryption") {
            try decrypting([.string("digest", "SHA3-256"), .string("pad-mode", "oaep")]).mechanism()
        }
        assertRefused(.invalidInput, "could not be fetched") { try decrypting([.string("digest", "no-such-digest")]) }
    }
}
