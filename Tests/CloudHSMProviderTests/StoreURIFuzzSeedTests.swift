// Seeds for the `store_uri` fuzz target (Fuzz/Targets/store_uri.swift): the URIs of
// StoreURITests, good and bad, and what the target found. `make fuzz-seeds` runs this with FUZZ_SEED_DIR set, which
// writes them to FUZZ_SEED_DIR/store_uri/.

import Foundation
import XCTest

@testable import CloudHSMProvider

final class StoreURIFuzzSeedTests: XCTestCase {
    static let uris = [
        "cloudhsm:", "cloudhsm:handle=42", "cloudhsm:label=web_server_imported_key", "cloudhsm:handle=42;label=web",
        "cloudhsm:label=web;handle=42", "CloudHSM:handle=7", "cloudhsm:handle=18446744073709551615",
        "cloudhsm:label=web%20server%20key", "cloudhsm:label=a%3Bb%3bc", "cloudhsm:label=100%25",
        "cloudhsm:label=cl%C3%A9", "cloudhsm:label=clé", "cloudhsm:label=a=b?c#d/e f",
        // Refused:
        "cloudhsm:handle=0x20", "cloudhsm:handle=-1", "cloudhsm:handle=18446744073709551616", "cloudhsm:handle=",
        "cloudhsm:label=a%2", "cloudhsm:label=%zz", "cloudhsm:label=50%", "cloudhsm:label=%C3%28", "cloudhsm:label=",
        "pkcs11:object=x", "cloudhsm", "cloudhsm://handle=5", "cloudhsm:object=web", "cloudhsm:Handle=5",
        "cloudhsm:handle=5;handle=6", "cloudhsm:label=a;label=b", "cloudhsm:web_server", "cloudhsm:;",
        "cloudhsm:handle=5;;label=a", "cloudhsm:a\nb=1", "cloudhsm:label=a%00b",
        "cloudhsm:label=" + String(repeating: "a", count: 257), "cloudhsm:label=a;\u{308}handle=5",
        // What the fuzz target found: a combining mark first (it fused with the quote in
        // the message).
        "\u{308}el\u{308}ehbe\u{308}el\u{308}=44",
    ]

    func testSeedsParseAsTheUnitTestsSayAndAreWrittenOnRequest() throws {
        let parsed = Self.uris.filter { (try? StoreURI(parsing: $0)) != nil }
        XCTAssertEqual(parsed.count, 13, "the first 13 parse, every other URI is refused")
        guard let root = ProcessInfo.processInfo.environment["FUZZ_SEED_DIR"], !root.isEmpty else { return }
        let directory = URL(fileURLWithPath: root).appendingPathComponent("store_uri")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for uri in Self.uris {
            let name = String(
                uri.utf8.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }, radix: 16)
            try Data(uri.utf8).write(to: directory.appendingPathComponent(name))
        }
    }
}
