// The one-pass search for a key reference block in a prefix of a key file, which the
// provider's decoder runs on every call: where blocks are found, and what it reports
// when there is none, so the decoder can leave the input where a PEM reader would.

import XCTest

@testable import CloudHSMCore

final class KeyReferenceScanTests: XCTestCase {
    let spki: [UInt8] = [0x30, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]
    let certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    func testFindsTheBlockAfterTextAndOtherBlocks() throws {
        let reference = KeyReference(clusterID: "local-dev", handle: 8, publicKeyInfo: spki, label: "web")
        let pem = reference.pemEncoded()
        for prefix in ["", "comment line\n", certificate, "\u{FEFF}", "  \n\t\n" + certificate + "more text\n"] {
            let bytes = Array((prefix + pem + "trailing text\n").utf8)
            guard case .found(let block) = KeyReference.scan(bytes) else {
                return XCTFail("not found after \(prefix.debugDescription)")
            }
            XCTAssertEqual(String(decoding: bytes[block], as: UTF8.self), pem)
            XCTAssertEqual(try KeyReference(pemBlock: bytes[block]), reference)
        }
        // Indented lines and CRLF line ends are still the block.
        let indented = pem.split(separator: "\n").map { "  " + $0 + "\r\n" }.joined()
        XCTAssertEqual(try KeyReference(pem: indented), reference)
    }

    func testTheBeginLineMustStartALine() {
        let pem = KeyReference(clusterID: "c", handle: 1, publicKeyInfo: spki).pemEncoded()
        let bytes = Array(("text on the same line " + pem).utf8)
        XCTAssertEqual(KeyReference.scan(bytes), .absent(sawPEM: false, firstBlockEnd: nil, lastLineStart: bytes.count))
    }

    func testCutOffBlocksAreUnterminated() {
        let lines = KeyReference(clusterID: "c", handle: 1, publicKeyInfo: spki).pemEncoded().split(separator: "\n")
        let head = "junk\n"
        let cut = Array((head + lines.dropLast().joined(separator: "\n") + "\n").utf8)
        XCTAssertEqual(KeyReference.scan(cut), .unterminated(begin: head.utf8.count))
        // Cut inside the BEGIN line itself: more input may complete it.
        XCTAssertEqual(KeyReference.scan(Array("-----BEGIN CLOUDHSM KEY REFERENCE-----".utf8)), .unterminated(begin: 0))
    }

    func testAbsentReportsWhereAPEMReaderWouldStop() {
        let text = Array(("preamble\n" + certificate + "-----BEGIN FOO-----\nAAAA\n").utf8)
        XCTAssertEqual(
            KeyReference.scan(text),
            .absent(sawPEM: true, firstBlockEnd: ("preamble\n" + certificate).utf8.count, lastLineStart: text.count))
        let partial = Array("one line\nsecond, cut of".utf8)
        XCTAssertEqual(KeyReference.scan(partial), .absent(sawPEM: false, firstBlockEnd: nil, lastLineStart: 9))
        XCTAssertEqual(KeyReference.scan([]), .absent(sawPEM: false, firstBlockEnd: nil, lastLineStart: 0))
    }

    func testTextAndBinary() {
        XCTAssertTrue(KeyReference.looksLikeText(Array("-----BEGIN X-----\r\n\tabc\u{0C}é\n".utf8)))
        XCTAssertFalse(KeyReference.looksLikeText([0x30, 0x82, 0x01, 0x0a, 0x02, 0x01, 0x00]))
        XCTAssertFalse(KeyReference.looksLikeText(Array("text\0more".utf8)))
    }

    func testAMegabyteOfTextWithoutABlock() {
        // 1 MiB of 64-byte lines: absent, and the last line ends the input.
        let line = Array(String(repeating: "x", count: 63).utf8) + [0x0a]
        let bytes = [UInt8]((0..<16384).lazy.flatMap { _ in line })
        XCTAssertEqual(KeyReference.scan(bytes), .absent(sawPEM: false, firstBlockEnd: nil, lastLineStart: bytes.count))
    }
}
