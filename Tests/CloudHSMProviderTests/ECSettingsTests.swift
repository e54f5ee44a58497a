// EC settings with the default provider's words: what says the same as an HSM key (a
// named curve, uncompressed points, no cofactor ECDH) is taken, what asks for something
// else is refused as unsupported by name, and words OpenSSL does not know are invalid
// input, as the default provider rejects them. Keys are checked as they are set on one.

import XCTest

@testable import CloudHSMProvider

final class ECSettingsTests: XCTestCase {
    typealias Support = ProviderTestSupport

    func testWordsThatDescribeAnHSMKeyAreTaken() throws {
        for word in ["named_curve", "NAMED_CURVE"] { XCTAssertNoThrow(try ECSettings.checkEncoding(word)) }
        for word in ["uncompressed", "Uncompressed"] { XCTAssertNoThrow(try ECSettings.checkPointFormat(word)) }
        for mode in [-1, 0] { XCTAssertNoThrow(try ECSettings.checkCofactorFlag(mode)) }
        for word in ["default", "named", "named-nist"] { XCTAssertNoThrow(try ECSettings.checkGroupCheck(word)) }
    }

    func testOtherKnownWordsAreRefusedByName() {
        assertRefused(.unsupported, "EC parameter encoding 'explicit': keys of the HSMs name their curve") {
            try ECSettings.checkEncoding("explicit")
        }
        for word in ["compressed", "hybrid"] {
            assertRefused(.unsupported, "EC point format '\(word)': the HSMs hand out uncompressed points") {
                try ECSettings.checkPointFormat(word)
            }
        }
        assertRefused(.unsupported, "use-cofactor-flag 1: cofactor ECDH is for key exchange") {
            try ECSettings.checkCofactorFlag(1)
        }
    }

    func testUnknownWordsAreInvalid() {
        assertRefused(.invalidInput, "EC parameter encoding 'foo' is unknown (named_curve or explicit)") {
            try ECSettings.checkEncoding("foo")
        }
        assertRefused(.invalidInput, "EC point format 'foo' is unknown (uncompressed, compressed or hybrid)") {
            try ECSettings.checkPointFormat("foo")
        }
        assertRefused(.invalidInput, "use-cofactor-flag 2 is invalid (-1, 0 or 1)") {
            try ECSettings.checkCofactorFlag(2)
        }
        assertRefused(.invalidInput, "EC group check type 'foo' is unknown") { try ECSettings.checkGroupCheck("foo") }
    }

    func testKeySettingsKeepTheKeyAsItIs() throws {
        let point: [UInt8] = [0x04] + Array(repeating: 0x11, count: 64)
        let what = "EC key handle 7"
        try Support.reading([
            .string("point-format", "uncompressed"), .string("encoding", "named_curve"),
            .int("use-cofactor-flag", 0), .int("include-public", 1), .string("group-check", "named"),
        ]) { try ECSettings.checkKeySettings($0, point: point, key: what) }
        try Support.reading(octets: "encoded-pub-key", point) {
            try ECSettings.checkKeySettings($0, point: point, key: what)
        }
        // Names outside the settable table pass, as they pass the default provider.
        try Support.reading([.string("no-such-setting", "x")]) {
            try ECSettings.checkKeySettings($0, point: point, key: what)
        }
    }

    func testKeySettingsThatWouldChangeItAreRefusedNamingTheKey() throws {
        let point: [UInt8] = [0x04] + Array(repeating: 0x11, count: 64)
        let what = "EC key handle 7"
        assertRefused(.unsupported, "EC point format 'compressed'") {
            try Support.reading([.string("point-format", "compressed")]) {
                try ECSettings.checkKeySettings($0, point: point, key: what)
            }
        }
        assertRefused(.unsupported, "include-public 0 shapes how the private key is encoded") {
            try Support.reading([.int("include-public", 0)]) {
                try ECSettings.checkKeySettings($0, point: point, key: what)
            }
        }
        assertRefused(.unsupported, "EC parameter 'seed' describes an explicit curve") {
            try Support.reading(octets: "seed", [0]) { try ECSettings.checkKeySettings($0, point: point, key: what) }
        }
        assertRefused(.unsupported, "encoded-pub-key: the public half of an HSM key is the HSMs' and does not change") {
            try Support.reading(octets: "encoded-pub-key", [0x04] + Array(repeating: 0x22, count: 64)) {
                try ECSettings.checkKeySettings($0, point: point, key: what)
            }
        }
        assertRefused(.unsupported, "(setting a parameter of EC key handle 7)") {
            try Support.reading([.int("use-cofactor-flag", 1)]) {
                try ECSettings.checkKeySettings($0, point: point, key: what)
            }
        }
        // Parameters alone have no point to compare with.
        assertRefused(.unsupported, "encoded-pub-key") {
            try Support.reading(octets: "encoded-pub-key", point) {
                try ECSettings.checkKeySettings($0, point: nil, key: "an EC key of the CloudHSM provider")
            }
        }
    }
}
