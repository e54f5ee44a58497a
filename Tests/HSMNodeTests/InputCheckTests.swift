// Arguments the node must refuse as invalid (0x11) with a reason, never as an internal
// error: raw blocks not below the modulus, public exponents out of range.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMNode

final class InputCheckTests: XCTestCase {
    func testRawSignNeedsABlockBelowTheModulus() throws {
        let node = try TestNode()
        var alice = node.userSession("alice")
        let pair = try XCTUnwrap(
            node.handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "raw", isSession: true, isExtractable: false),
                &alice
            ).pair)
        let spki = try XCTUnwrap(node.handler.ok(.exportPublicKey(pair.publicKey), &alice).bytes)
        let publicKey = try RSAPublicKey(publicKeyInfo: spki, context: sharedContext)
        let n = publicKey.modulus
        XCTAssertEqual(n.count, 256)

        var nMinusOne = n
        nMinusOne[255] -= 1  // n is odd, so its last byte is not 0
        var nPlusOne = n
        var index = 255
        while nPlusOne[index] == 0xff {
            nPlusOne[index] = 0
            index -= 1
        }
        nPlusOne[index] += 1
        for (name, block) in [("n", n), ("n + 1", nPlusOne), ("all ones", [UInt8](repeating: 0xff, count: 256))] {
            let response = node.handler.handle(
                .sign(key: pair.privateKey, mechanism: .raw, data: block), session: &alice)
            XCTAssertEqual(response.code, .invalidArgument, "\(name): \(response.detail)")
            XCTAssertTrue(response.detail.contains("not smaller than the modulus"), "\(name): \(response.detail)")
        }
        let tooLong = node.handler.handle(
            .sign(key: pair.privateKey, mechanism: .raw, data: [0] + nMinusOne), session: &alice)
        XCTAssertEqual(tooLong.code, .invalidArgument, tooLong.detail)
        XCTAssertTrue(tooLong.detail.contains("257 bytes, the modulus is 256"), tooLong.detail)

        // The largest block there is signs, and the public key undoes it.
        let signature = try XCTUnwrap(
            node.handler.ok(.sign(key: pair.privateKey, mechanism: .raw, data: nMinusOne), &alice).bytes)
        XCTAssertEqual(try publicKey.encrypt(signature, mechanism: .raw), nMinusOne)
    }

    func testPublicExponentMustBeOddAndAtMost32Bits() throws {
        let node = try TestNode()
        var alice = node.userSession("alice")
        for exponent: UInt64 in [0, 1, 4, 65536, 1 << 32 | 1, UInt64.max] {
            let response = node.handler.handle(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: exponent, label: "e", isSession: true, isExtractable: false),
                session: &alice)
            XCTAssertEqual(response.code, .invalidArgument, "\(exponent): \(response.detail)")
            XCTAssertTrue(response.detail.contains("3 to 4294967295"), "\(exponent): \(response.detail)")
        }
        let pair = try XCTUnwrap(
            node.handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 3, label: "e3", isSession: true, isExtractable: false), &alice
            ).pair)
        let spki = try XCTUnwrap(node.handler.ok(.exportPublicKey(pair.publicKey), &alice).bytes)
        XCTAssertEqual(try RSAPublicKey(publicKeyInfo: spki, context: sharedContext).publicExponent, [3])
    }

    func testRawBlockRule() {
        XCTAssertNil(RawRSABlock.problem([0x7f, 0xff], modulus: [0x80, 0x01]))
        XCTAssertNil(RawRSABlock.problem([0x80, 0x00], modulus: [0x00, 0x80, 0x01]))
        XCTAssertNotNil(RawRSABlock.problem([0x80, 0x01], modulus: [0x80, 0x01]))
        XCTAssertNotNil(RawRSABlock.problem([0x80, 0x02], modulus: [0x80, 0x01]))
        XCTAssertNotNil(RawRSABlock.problem([0x01], modulus: [0x80, 0x01]))
    }

    func testUserNameLimitMatchesTheNode() {
        XCTAssertTrue(NodeState.isValidUserName(String(repeating: "u", count: UserName.maximumLength)))
        XCTAssertFalse(NodeState.isValidUserName(String(repeating: "u", count: UserName.maximumLength + 1)))
        XCTAssertNil(UserName.problem(String(repeating: "u", count: UserName.maximumLength)))
        let problem = UserName.problem(String(repeating: "u", count: 100_000))
        XCTAssertEqual(problem, "the user name is 100000 bytes long; user names are at most 32 bytes")
    }
}
