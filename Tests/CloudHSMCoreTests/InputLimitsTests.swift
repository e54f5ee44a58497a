// The shared input rules: user name lengths, public exponents, raw RSA blocks, and how
// messages show text that came from a file.

import XCTest

@testable import CloudHSMCore

final class InputLimitsTests: XCTestCase {
    func testUserNames() {
        XCTAssertNil(UserName.problem("crypto_user"))
        XCTAssertEqual(UserName.problem(""), "the user name is empty")
        XCTAssertEqual(
            UserName.problem(String(repeating: "é", count: 20)),
            "the user name is 40 bytes long; user names are at most 32 bytes")
    }

    func testPublicExponents() {
        for allowed: UInt64 in [3, 17, 65537, 0xFFFF_FFFF] { XCTAssertTrue(RSAPublicExponent.isAllowed(allowed)) }
        for refused: UInt64 in [0, 1, 2, 65536, 0x1_0000_0001, UInt64.max] {
            XCTAssertFalse(RSAPublicExponent.isAllowed(refused), "\(refused)")
        }
    }

    func testControlCharactersAreEscaped() {
        XCTAssertEqual("local-dev".escapingControlCharacters, "local-dev")
        XCTAssertEqual(
            "a\0b\tc\nd\u{1b}[31m\u{7f}\u{85}é".escapingControlCharacters, "a\\0b\\tc\\nd\\x1b[31m\\x7f\\x85é")
    }

    func testTruncationIsVisibleAndKeepsCharactersWhole() {
        XCTAssertEqual("short".truncated(toUTF8Bytes: 10), "short")
        let long = String(repeating: "é", count: 100)  // 200 bytes
        let cut = long.truncated(toUTF8Bytes: 50)
        XCTAssertLessThanOrEqual(cut.utf8.count, 50)
        XCTAssertTrue(cut.hasSuffix("... (200 bytes in all)"), cut)
        XCTAssertTrue(cut.hasPrefix("éé"), cut)
    }
}
