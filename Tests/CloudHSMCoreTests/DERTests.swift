// The DER reader under the fake PEM: one encoding per value, as DER requires. The cases
// here are what the `der` fuzz target found (Fuzz/Targets/der.swift): lengths and
// integers with redundant leading zeros were accepted, so several files decoded to the
// same key reference.

import XCTest

@testable import CloudHSMCore

final class DERTests: XCTestCase {
    /// The crashing inputs of the `der` fuzz target, kept as seeds too (FuzzSeedTests).
    static let fuzzFindings: [[UInt8]] = [
        [0x02, 0x02, 0x00, 0x00],  // INTEGER 0 with a redundant leading zero
        [0x02, 0x02, 0x00, 0x60],  // INTEGER 96 with a redundant leading zero
    ]

    func testIntegersWithRedundantLeadingZerosAreRefused() {
        for input in Self.fuzzFindings {
            var reader = DERReader(input)
            XCTAssertThrowsError(try reader.readUnsignedInteger("handle"), "\(input)") {
                XCTAssertEqual($0 as? DERError, DERError(reason: "handle has a non-minimal encoding"))
            }
        }
        // The zero that keeps a high first byte positive belongs there.
        for (input, value) in [([0x02, 0x02, 0x00, 0x80], 128), ([0x02, 0x01, 0x00], 0), ([0x02, 0x01, 0x7f], 127)]
            as [([UInt8], UInt64)]
        {
            var reader = DERReader(input)
            XCTAssertEqual(try reader.readUnsignedInteger("handle"), value)
            XCTAssertEqual(DER.integer(value), input)
        }
        var nine = DERReader([0x02, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        XCTAssertEqual(try nine.readUnsignedInteger("handle"), UInt64.max)
    }

    func testLengthsWithLeadingZeroBytesAreRefused() {
        let text = [UInt8](repeating: 0x61, count: 0x85)
        var minimal = DERReader([0x0c, 0x81, 0x85] + text)
        XCTAssertEqual(try minimal.readUTF8String("label"), String(decoding: text, as: UTF8.self))
        var padded = DERReader([0x0c, 0x82, 0x00, 0x85] + text)
        XCTAssertThrowsError(try padded.readUTF8String("label")) {
            XCTAssertEqual($0 as? DERError, DERError(reason: "label has a non-minimal length"))
        }
        var short = DERReader([0x0c, 0x81, 0x05] + text.prefix(5))
        XCTAssertThrowsError(try short.readUTF8String("label")) {
            XCTAssertEqual($0 as? DERError, DERError(reason: "label has a non-minimal length"))
        }
    }

    /// The same key reference with a padded handle, or a padded outer length, is refused
    /// with a message that names the field, so every accepted file is the one we write.
    func testKeyReferenceHasOneEncoding() throws {
        let reference = KeyReference(clusterID: "c", handle: 96, publicKeyInfo: [0x30, 0x00], label: "l")
        let der = reference.derEncoded()
        XCTAssertEqual(try KeyReference(der: der), reference)
        // SEQUENCE { INTEGER 1, UTF8String "c", INTEGER 96 ... }: the handle is at offset 8.
        XCTAssertEqual(Array(der[8...10]), [0x02, 0x01, 0x60])
        let paddedHandle = [0x30, der[1] + 1] + der[2..<8] + [0x02, 0x02, 0x00, 0x60] + der[11...]
        XCTAssertThrowsError(try KeyReference(der: Array(paddedHandle))) {
            XCTAssertEqual($0 as? KeyReferenceError, .malformed("key handle has a non-minimal encoding"))
        }
        let paddedLength = [0x30, 0x82, 0x00, der[1]] + der[2...]
        XCTAssertThrowsError(try KeyReference(der: Array(paddedLength))) {
            XCTAssertEqual($0 as? KeyReferenceError, .malformed("key reference has a non-minimal length"))
        }
    }
}
