// Credentials from `user:password` strings and the environment, and that error messages
// never echo a password.

import CloudHSMCore
import Glibc
import XCTest

@testable import HSMClient

final class CredentialsTests: XCTestCase {
    override func tearDown() {
        unsetenv("n3fips_password")
        unsetenv("CLOUDHSM_PIN")
    }

    func testSplitsAtTheFirstColon() throws {
        let credentials = try Credentials(parsing: "alice:pa:ss:word", source: "test")
        XCTAssertEqual(credentials, Credentials(role: .cryptoUser, user: "alice", password: "pa:ss:word"))
        XCTAssertEqual("\(credentials)", "CU alice")
    }

    func testMalformedValues() {
        for (value, expected) in [
            ("alice", "no colon"), (":secret", "empty user name"), ("alice:", "empty password"), ("", "no colon"),
        ] {
            XCTAssertThrowsError(try Credentials(parsing: value, source: "n3fips_password")) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(expected), text)
                XCTAssertTrue(text.contains("n3fips_password"), text)
            }
        }
        XCTAssertThrowsError(try Credentials(parsing: "alice", source: "x")) { error in
            XCTAssertFalse("\(error)".contains("alice"))
        }
    }

    func testEnvironmentPrefersN3fipsPassword() throws {
        XCTAssertThrowsError(try Credentials.fromEnvironment()) { error in
            XCTAssertTrue("\(error)".contains("n3fips_password"))
        }
        setenv("CLOUDHSM_PIN", "bob:pin", 1)
        XCTAssertEqual(try Credentials.fromEnvironment().user, "bob")
        setenv("n3fips_password", "carol:pw", 1)
        XCTAssertEqual(try Credentials.fromEnvironment(), Credentials(user: "carol", password: "pw"))
        setenv("n3fips_password", "broken", 1)
        XCTAssertThrowsError(try Credentials.fromEnvironment())
    }
}
