// The cloudhsm: URI parser: the forms a program may name a key with, percent-decoding of
// labels, and every malformed URI refused with what is wrong; and the store's answers to
// OpenSSL's load and eof calls, which decide whether a failed lookup reaches the user.

import COpenSSL
import CloudHSMCore
import XCTest

@testable import CloudHSMProvider

final class StoreURITests: XCTestCase {
    func testTheForms() throws {
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:"), StoreURI())
        XCTAssertTrue(try StoreURI(parsing: "cloudhsm:").listsEveryKey)
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:handle=42"), StoreURI(handle: 42))
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=web_server"), StoreURI(label: "web_server"))
        XCTAssertEqual(
            try StoreURI(parsing: "cloudhsm:handle=42;label=web"), StoreURI(handle: 42, label: "web"))
        XCTAssertEqual(
            try StoreURI(parsing: "cloudhsm:label=web;handle=42"), StoreURI(handle: 42, label: "web"))
        XCTAssertFalse(try StoreURI(parsing: "cloudhsm:handle=1").listsEveryKey)
    }

    func testTheSchemeIsMatchedWithoutCase() throws {
        XCTAssertEqual(try StoreURI(parsing: "CloudHSM:handle=7"), StoreURI(handle: 7))
    }

    func testHandlesAreDecimal() throws {
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:handle=0").handle, 0)
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:handle=007").handle, 7)
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:handle=18446744073709551615").handle, KeyHandle.max)
        assertRefused(.invalidInput, "handle '0x20' is not a decimal number") {
            try StoreURI(parsing: "cloudhsm:handle=0x20")
        }
        assertRefused(.invalidInput, "handle '-1' is not a decimal number") {
            try StoreURI(parsing: "cloudhsm:handle=-1")
        }
        assertRefused(.invalidInput, "handle ' 5' is not a decimal number") {
            try StoreURI(parsing: "cloudhsm:handle= 5")
        }
        assertRefused(.invalidInput, "larger than any key handle") {
            try StoreURI(parsing: "cloudhsm:handle=18446744073709551616")
        }
        assertRefused(.invalidInput, "handle= has no number") { try StoreURI(parsing: "cloudhsm:handle=") }
    }

    func testLabelsArePercentDecoded() throws {
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=web%20server").label, "web server")
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=a%3Bb%3bc").label, "a;b;c")
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=100%25").label, "100%")
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=cl%C3%A9").label, "clé")
        // Only % and ; are special: everything else stands for itself.
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=a=b?c#d/e f").label, "a=b?c#d/e f")
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=clé").label, "clé")
    }

    func testBrokenEscapesAndBadLabelsAreRefused() {
        assertRefused(.invalidInput, "'%2' in the label is not a percent escape") {
            try StoreURI(parsing: "cloudhsm:label=a%2")
        }
        assertRefused(.invalidInput, "'%zz' in the label is not a percent escape (two hex digits; write % as %25)") {
            try StoreURI(parsing: "cloudhsm:label=%zz")
        }
        assertRefused(.invalidInput, "'%' in the label is not a percent escape") {
            try StoreURI(parsing: "cloudhsm:label=50%")
        }
        assertRefused(.invalidInput, "the label is not UTF-8 once its percent escapes are decoded") {
            try StoreURI(parsing: "cloudhsm:label=%C3%28")
        }
        assertRefused(.invalidInput, "label= has no label") { try StoreURI(parsing: "cloudhsm:label=") }
        assertRefused(.invalidInput, "the label holds a NUL byte (%00), which no key label can") {
            try StoreURI(parsing: "cloudhsm:label=a%00b")
        }
    }

    func testLabelsAreAsLongAsAKeyLabelCanBe() throws {
        let longest = String(repeating: "é", count: 128)
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=\(longest)").label, longest)
        XCTAssertEqual(
            try StoreURI(parsing: "cloudhsm:label=" + String(repeating: "%41", count: 256)).label,
            String(repeating: "A", count: 256))
        assertRefused(.invalidInput, "the label is 257 bytes long once decoded; a key label holds at most 256") {
            try StoreURI(parsing: "cloudhsm:label=" + String(repeating: "a", count: 257))
        }
        // The URI in the message is cut short; the problem is not.
        assertRefused(.invalidInput, "the label is 4000 bytes long") {
            try StoreURI(parsing: "cloudhsm:label=" + String(repeating: "%41", count: 4000))
        }
    }

    func testMalformedURIsAreRefusedByName() {
        assertRefused(.invalidInput, "it does not start with 'cloudhsm:'") { try StoreURI(parsing: "pkcs11:object=x") }
        assertRefused(.invalidInput, "it does not start with 'cloudhsm:'") { try StoreURI(parsing: "cloudhsm") }
        assertRefused(.invalidInput, "a cloudhsm: URI has no '//' part") {
            try StoreURI(parsing: "cloudhsm://handle=5")
        }
        assertRefused(.invalidInput, "unknown attribute 'object' (a cloudhsm: URI takes handle and label)") {
            try StoreURI(parsing: "cloudhsm:object=web")
        }
        assertRefused(.invalidInput, "unknown attribute 'Handle'") { try StoreURI(parsing: "cloudhsm:Handle=5") }
        assertRefused(.invalidInput, "attribute 'handle' appears twice") {
            try StoreURI(parsing: "cloudhsm:handle=5;handle=6")
        }
        assertRefused(.invalidInput, "attribute 'label' appears twice") {
            try StoreURI(parsing: "cloudhsm:label=a;label=b")
        }
        assertRefused(.invalidInput, "attribute 'web_server' has no value") {
            try StoreURI(parsing: "cloudhsm:web_server")
        }
        for text in ["cloudhsm:;", "cloudhsm:handle=5;", "cloudhsm:;label=a", "cloudhsm:handle=5;;label=a"] {
            assertRefused(.invalidInput, "it has an empty attribute") { try StoreURI(parsing: text) }
        }
    }

    /// Separators are bytes: a combining mark after ';' does not hide it, as it did when
    /// the parser compared Characters (the store_uri fuzz target showed such a mark fusing
    /// with the character before it).
    func testSeparatorsAreBytesNotCharacters() throws {
        XCTAssertEqual(
            try StoreURI(parsing: "cloudhsm:label=a\u{308};handle=5"), StoreURI(handle: 5, label: "a\u{308}"))
        assertRefused(.invalidInput, "unknown attribute '\u{308}handle'") {
            try StoreURI(parsing: "cloudhsm:label=a;\u{308}handle=5")
        }
        XCTAssertEqual(try StoreURI(parsing: "cloudhsm:label=\u{308}x").label, "\u{308}x")
        assertRefused(.invalidInput, "it does not start with 'cloudhsm:'") { try StoreURI(parsing: "cloudhsm\u{308}:") }
    }

    func testRefusalsNameTheURIAndTheForms() {
        assertRefused(.invalidInput, "malformed cloudhsm: URI 'cloudhsm:foo=1': unknown attribute 'foo'") {
            try StoreURI(parsing: "cloudhsm:foo=1")
        }
        assertRefused(.invalidInput, "the forms are \(StoreURI.forms)") { try StoreURI(parsing: "cloudhsm:foo=1") }
        // What the user typed is shown escaped: a newline cannot forge a line of output.
        assertRefused(.invalidInput, "unknown attribute 'a\\nb'") { try StoreURI(parsing: "cloudhsm:a\nb=1") }
    }

    func testTheCanonicalSpellingParsesBack() throws {
        for uri in [
            StoreURI(), StoreURI(handle: 42), StoreURI(label: "web server; 100%"), StoreURI(handle: 1, label: "clé\n"),
        ] {
            XCTAssertEqual(try StoreURI(parsing: uri.description), uri, uri.description)
        }
        XCTAssertEqual(StoreURI(handle: 1, label: "a b;c%").description, "cloudhsm:handle=1;label=a%20b%3Bc%25")
    }
}

final class StoreCursorTests: XCTestCase {
    struct Refused: Error {}

    func testItemsThenTheEnd() throws {
        var cursor = StoreCursor<Int>()
        XCTAssertFalse(cursor.isAtEnd, "before the search the store does not know")
        var searches = 0
        let search = { () -> [Int] in
            searches += 1
            return [1, 2]
        }
        XCTAssertEqual(try cursor.advance(search: search), 1)
        XCTAssertFalse(cursor.isAtEnd)
        XCTAssertEqual(try cursor.advance(search: search), 2)
        XCTAssertTrue(cursor.isAtEnd)
        XCTAssertNil(try cursor.advance(search: search))
        XCTAssertEqual(searches, 1, "the cluster is asked once per store")
    }

    func testAnEmptyStoreEndsAtOnce() throws {
        var cursor = StoreCursor<Int>()
        XCTAssertNil(try cursor.advance { [] })
        XCTAssertTrue(cursor.isAtEnd)
    }

    /// A failed search leaves eof false for OpenSSL to record the failure, and the next
    /// load ends the store without searching again.
    func testAFailedSearchIsSeenThenEnds() {
        var cursor = StoreCursor<Int>()
        XCTAssertThrowsError(try cursor.advance { throw Refused() })
        XCTAssertFalse(cursor.isAtEnd)
        XCTAssertFalse(cursor.isAtEnd, "eof may be asked several times before the next load")
        XCTAssertNil(
            try cursor.advance {
                XCTFail("searched twice")
                return [1]
            })
        XCTAssertTrue(cursor.isAtEnd)
    }

    /// An item that could not be passed on holds eof back once; the rest still follow.
    func testAFailedItemHoldsTheEndBackOnce() throws {
        var cursor = StoreCursor<Int>()
        XCTAssertEqual(try cursor.advance { [1, 2] }, 1)
        XCTAssertEqual(try cursor.advance { [] }, 2)
        cursor.reportFailure()
        XCTAssertFalse(cursor.isAtEnd)
        XCTAssertNil(try cursor.advance { [] })
        XCTAssertTrue(cursor.isAtEnd)
    }
}

/// The loader as OpenSSL reaches it: through its row and its table, without a cluster
/// (a store asked for certificates never asks one).
final class StoreLoaderTableTests: XCTestCase {
    func testTheRowAndTheTable() throws {
        let row = try XCTUnwrap(Algorithms.table(for: OSSL_OP_STORE))
        XCTAssertEqual(String(cString: row.pointee.algorithm_names), "cloudhsm")
        XCTAssertEqual(String(cString: row.pointee.property_definition), "provider=cloudhsm")
        var ids: [Int32] = []
        var entry = KeyStoreLoader.dispatch
        while entry.pointee.function_id != 0 {
            ids.append(entry.pointee.function_id)
            entry += 1
        }
        XCTAssertEqual(
            ids.sorted(),
            [
                OSSL_FUNC_STORE_OPEN, OSSL_FUNC_STORE_ATTACH, OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS,
                OSSL_FUNC_STORE_SET_CTX_PARAMS, OSSL_FUNC_STORE_LOAD, OSSL_FUNC_STORE_EOF, OSSL_FUNC_STORE_CLOSE,
            ])
        // OSSL_STORE_supports_search reads the settable list: alias yes, subject no.
        let settable = try XCTUnwrap(StoreSlot.settableContextParams.function(in: KeyStoreLoader.dispatch)?(nil))
        XCTAssertNotNil(OSSL_PARAM_locate_const(settable, "alias"))
        XCTAssertNotNil(OSSL_PARAM_locate_const(settable, "expect"))
        XCTAssertNil(OSSL_PARAM_locate_const(settable, "subject"))
    }

    func testOpenParsesAndAStoreOfCertificatesEndsWithoutAsking() throws {
        let table = KeyStoreLoader.dispatch
        let open = try XCTUnwrap(StoreSlot.open.function(in: table))
        let setParams = try XCTUnwrap(StoreSlot.setContextParams.function(in: table))
        let load = try XCTUnwrap(StoreSlot.load.function(in: table))
        let eof = try XCTUnwrap(StoreSlot.eof.function(in: table))
        let close = try XCTUnwrap(StoreSlot.close.function(in: table))

        XCTAssertNil(open(nil, "cloudhsm:handle=x"), "a malformed URI opens nothing")
        let store = try XCTUnwrap(open(nil, "cloudhsm:label=web"))
        defer { XCTAssertEqual(close(store), 1) }
        XCTAssertEqual(eof(store), 0, "nothing is known before the first load")

        var subject: [UInt8] = [0x30, 0x00]
        var search = [OSSL_PARAM_construct_octet_string(cString("subject"), &subject, 2), OSSL_PARAM_construct_end()]
        XCTAssertEqual(setParams(store, &search), 0, "a search by subject is refused, not ignored")

        var certificate = Int32(OSSL_STORE_INFO_CERT)
        var properties = Array("provider=default".utf8CString)
        try properties.withUnsafeMutableBufferPointer { text in
            var expect = [
                OSSL_PARAM_construct_int(cString("expect"), &certificate),
                OSSL_PARAM_construct_utf8_string(cString("properties"), text.baseAddress, 0),
                OSSL_PARAM_construct_end(),
            ]
            XCTAssertEqual(setParams(store, &expect), 1)
            let callback: DataCallback = { _, _ in
                XCTFail("the store handed out an object")
                return 0
            }
            XCTAssertEqual(load(store, callback, nil, nil, nil), 1)
        }
        XCTAssertEqual(eof(store), 1)
    }
}
