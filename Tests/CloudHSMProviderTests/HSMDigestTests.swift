// Digest names as OpenSSL spells them: the common spellings without a fetch, others
// through OpenSSL's names (an OID); a digest the HSMs lack and a name nobody knows are
// told apart in the refusal.

import XCTest

@testable import CloudHSMProvider

final class HSMDigestTests: XCTestCase {
    func testSpellingsAreKeptForTheAnswer() throws {
        for (name, digest) in [
            ("SHA256", HSMDigest.sha256), ("sha256", .sha256), ("SHA2-256", .sha256), ("sha-256", .sha256),
            ("SHA1", .sha1), ("sha224", .sha224), ("SHA384", .sha384), ("sha512", .sha512), ("MD5-SHA1", .md5SHA1),
            ("md5-sha1", .md5SHA1),
        ] {
            let found = try HSMDigest.named(name, for: "a test")
            XCTAssertEqual(found, digest, name)
            XCTAssertEqual(found.spelling, name)
        }
    }

    func testOtherNamesGoThroughOpenSSL() throws {
        XCTAssertEqual(try HSMDigest.named("2.16.840.1.101.3.4.2.1", for: "a test"), .sha256)
        XCTAssertEqual(try HSMDigest.named("SHA256", properties: "provider=default", for: "a test"), .sha256)
    }

    func testRefusalsSayWhich() {
        assertRefused(.unsupported, "digest SHA3-256 for a test: the HSMs take SHA-1, SHA-224, SHA-256") {
            try HSMDigest.named("sha3-256", for: "a test")
        }
        assertRefused(.unsupported, "digest SHA2-512/256") { try HSMDigest.named("SHA512-256", for: "a test") }
        assertRefused(.invalidInput, "digest 'no-such' could not be fetched") {
            try HSMDigest.named("no-such", for: "a test")
        }
        assertRefused(.invalidInput, "with properties 'provider=nowhere' could not be fetched") {
            try HSMDigest.named("SHA256", properties: "provider=nowhere", for: "a test")
        }
    }
}
