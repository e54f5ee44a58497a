// EC private and public keys: generation on the three supported curves, parsing of key
// files the openssl tool writes (SEC1 and PKCS#8, PEM and DER), refusal of other curves
// and of keys whose public point is not theirs, and ECDSA signatures that verify.

import CloudHSMCore
import Foundation
import XCTest

@testable import OpenSSLKit

final class ECKeyTests: XCTestCase {
    static let context = try! CryptoContext()
    static let p256 = try! ECPrivateKey.generate(curve: .p256, context: context)
    var context: CryptoContext { Self.context }

    /// `openssl ecparam -name prime256v1 -genkey -noout`: SEC1 "EC PRIVATE KEY".
    static let sec1PEM = """
        -----BEGIN EC PRIVATE KEY-----
        MHcCAQEEIKNMVTWejS38VIt84sH3PZmULzFjH4Rr5fssM83xJQjVoAoGCCqGSM49
        AwEHoUQDQgAE6q8ipJFi2iufap+JVD2GbH92X0H5wOfFbLWSbAU5Yn/JVkDRGEO0
        nVJ5aBBtWaGV9NQ+dnrEWtp7wDyswn2PLQ==
        -----END EC PRIVATE KEY-----
        """
    /// `openssl pkey -pubout -outform DER` of the key above.
    static let sec1PublicKeyInfoHex =
        "3059301306072a8648ce3d020106082a8648ce3d03010703420004eaaf22a49162da2b9f6a9f89543d866c7f765f41f9c0e7c56cb5926c0539627fc95640d11843b49d527968106d59a195f4d43e767ac45ada7bc03cacc27d8f2d"
    /// `openssl ecparam -name secp384r1 -genkey`: the parameters block, then the key.
    static let p384WithParametersPEM = """
        -----BEGIN EC PARAMETERS-----
        BgUrgQQAIg==
        -----END EC PARAMETERS-----
        -----BEGIN EC PRIVATE KEY-----
        MIGkAgEBBDBx7sUa3ppr/d5z2Ee6gVd/iyzbQ6m6RbjKzwbHNeSuAMwGrab5eZfd
        X7K+FyoZycagBwYFK4EEACKhZANiAARwlCKxDxCntxSGqfo+oUbCshVL/ayIM0Wr
        18B4gYc6OdPwDCXt2lRhRX73Eckb0VTBYVqNc99KrXg7967bdatTsVMrYqyD6z33
        LO/O8UqfAh8yxxGwKS+z5L+C1F4oMnE=
        -----END EC PRIVATE KEY-----
        """
    /// `openssl ecparam -name secp256k1 -genkey -noout`: a curve the HSMs do not support.
    static let secp256k1PEM = """
        -----BEGIN EC PRIVATE KEY-----
        MHQCAQEEIEEgVPS2B3AJXnmU9CE40ga8mInz1bxcZmy29obQBm9DoAcGBSuBBAAK
        oUQDQgAE6FNfgIzakYhtvuLArm8H6NBmTeJZUSD2PiOHoEZIZSo4rHmeET7+Mn2i
        +Y8m+LHkyrnfI3DOLCDg8Agcm5HBDg==
        -----END EC PRIVATE KEY-----
        """
    /// `openssl ecparam -name prime256v1 -genkey -noout -param_enc explicit`: P-256, spelt out.
    static let explicitParametersPEM = """
        -----BEGIN EC PRIVATE KEY-----
        MIIBaAIBAQQg/hGoyx9S28za5EqAiqbK4Omtmb0/3W+sFsfdLpklePKggfowgfcC
        AQEwLAYHKoZIzj0BAQIhAP////8AAAABAAAAAAAAAAAAAAAA////////////////
        MFsEIP////8AAAABAAAAAAAAAAAAAAAA///////////////8BCBaxjXYqjqT57Pr
        vVV2mIa8ZR0GsMxTsPY7zjw+J9JgSwMVAMSdNgiG5wSTamZ44ROdJreBn36QBEEE
        axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpZP40Li/hp/m47n60p8D54W
        K84zV2sxXs7LtkBoN79R9QIhAP////8AAAAA//////////+85vqtpxeehPO5ysL8
        YyVRAgEBoUQDQgAExprpt2fSVKt5sM3NhzQswHuhB/HYxPqP+pPQrlauuTFbu2Lu
        X/+nF605eZU+cFAM5+1aYKRcY+ffMbJ5AEaspg==
        -----END EC PRIVATE KEY-----
        """

    func message(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    func testGeneratesEachSupportedCurveAndSignaturesVerify() throws {
        for curve in ECCurve.supported {
            let key = try ECPrivateKey.generate(curve: curve, context: context)
            XCTAssertEqual(key.curve, curve)
            XCTAssertEqual(ECCurve(publicKeyInfo: key.publicKeyInfo), curve)
            let publicKey = try key.publicKey()
            XCTAssertEqual(publicKey.curve, curve)
            XCTAssertEqual(publicKey.publicKeyInfo, key.publicKeyInfo)
            XCTAssertEqual(publicKey.encodedPoint.count, 1 + 2 * curve.coordinateLength)
            XCTAssertEqual(publicKey.encodedPoint.first, 0x04)
            for algorithm in DigestAlgorithm.allCases where algorithm != .none {
                let digest = try Digest.hash(Array("message".utf8), algorithm: algorithm, context: context)
                for mechanismDigest in [algorithm, .none] {
                    let signature = try key.sign(digest: digest, algorithm: mechanismDigest)
                    XCTAssertTrue(publicKey.verify(signature: signature, digest: digest), "\(curve) \(algorithm)")
                    try Self.checkECDSASigValue(signature, curve: curve)
                    var tampered = digest
                    tampered[0] ^= 1
                    XCTAssertFalse(publicKey.verify(signature: signature, digest: tampered))
                }
            }
        }
    }

    /// SEQUENCE { INTEGER r, INTEGER s }, each at most the curve's size (plus a sign byte).
    static func checkECDSASigValue(
        _ signature: [UInt8], curve: ECCurve, file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        XCTAssertEqual(signature.first, 0x30, file: file, line: line)
        var offset = signature[1] == 0x81 ? 3 : 2
        XCTAssertEqual(
            offset + Int(signature[offset - 1]), signature.count, "sequence length", file: file, line: line)
        for _ in 0..<2 {
            XCTAssertEqual(signature[offset], 0x02, file: file, line: line)
            let length = Int(signature[offset + 1])
            XCTAssertLessThanOrEqual(length, curve.coordinateLength + 1, file: file, line: line)
            offset += 2 + length
        }
        XCTAssertEqual(offset, signature.count, file: file, line: line)
    }

    func testRefusesUnsupportedCurvesByName() {
        let generated = message { try ECPrivateKey.generate(curve: ECCurve(rawValue: 16), context: self.context) }
        XCTAssertTrue(generated.contains("curve not supported: secp256k1 (curve id 16)"), generated)
        let parsed = message {
            try PrivateKey.parse(fileContents: Array(Self.secp256k1PEM.utf8), context: self.context)
        }
        XCTAssertTrue(parsed.contains("curve not supported: secp256k1"), parsed)
        XCTAssertTrue(parsed.hasPrefix("invalid argument"), parsed)
    }

    func testExplicitParametersOfP256BecomeTheNamedCurve() throws {
        let key = try PrivateKey.parse(fileContents: Array(Self.explicitParametersPEM.utf8), context: context)
        XCTAssertEqual(ECCurve(publicKeyInfo: key.publicKeyInfo), .p256)
        XCTAssertEqual(key.publicKeyInfo.count, 91)
        // What is sealed and wrapped names the curve too.
        guard case .ec(let ec) = key else { return XCTFail("not an EC key") }
        XCTAssertEqual(try ECPrivateKey(der: try ec.pkcs8DER(), context: context).publicKeyInfo, key.publicKeyInfo)
        XCTAssertLessThan(try ec.pkcs8DER().count, 200)
    }

    func testReadsSEC1AndPKCS8FilesFromOpenSSL() throws {
        guard case .ec(let sec1) = try PrivateKey.parse(fileContents: Array(Self.sec1PEM.utf8), context: context)
        else { return XCTFail("not read as an EC key") }
        XCTAssertEqual(sec1.curve, .p256)
        XCTAssertEqual(sec1.publicKeyInfo, Fixtures.hex(Self.sec1PublicKeyInfoHex))
        // Its PKCS#8 form, as DER and as PEM, and its SEC1 DER are the same key.
        let pkcs8 = try sec1.pkcs8DER()
        let fromDER = try PrivateKey.parse(fileContents: pkcs8, context: context)
        XCTAssertEqual(fromDER.publicKeyInfo, sec1.publicKeyInfo)
        XCTAssertEqual(fromDER.keyType, .ec)
        XCTAssertEqual(fromDER.sizeInBits, 256)
        let pem = try PEMBlock.write(label: "PRIVATE KEY", der: pkcs8)
        XCTAssertEqual(
            try PrivateKey.parse(fileContents: Array(pem.utf8), context: context).publicKeyInfo,
            sec1.publicKeyInfo)
        let sec1DER = try XCTUnwrap(try PEMBlock.readAll(Array(Self.sec1PEM.utf8)).first).der
        XCTAssertEqual(try ECPrivateKey(der: sec1DER, context: context).publicKeyInfo, sec1.publicKeyInfo)
        // The parameters block before the key is skipped.
        let p384 = try PrivateKey.parse(fileContents: Array(Self.p384WithParametersPEM.utf8), context: context)
        XCTAssertEqual(p384.sizeInBits, 384)
        XCTAssertEqual(ECCurve(publicKeyInfo: p384.publicKeyInfo), .p384)
        // The fixture every OpenSSLKit test shares (a PKCS#8 P-256 key).
        XCTAssertEqual(
            try PrivateKey.parse(fileContents: Array(Fixtures.ecPKCS8PEM.utf8), context: context).keyType, .ec)
        // And RSA files still read as RSA.
        XCTAssertEqual(
            try PrivateKey.parse(fileContents: Array(Fixtures.rsaPKCS1PEM.utf8), context: context).keyType, .rsa)
    }

    func testPKCS8RoundTripKeepsTheKey() throws {
        let key = Self.p256
        let again = try ECPrivateKey(der: try key.pkcs8DER(), context: context)
        XCTAssertEqual(again.publicKeyInfo, key.publicKeyInfo)
        let digest = try Digest.hash([1, 2, 3], algorithm: .sha256, context: context)
        XCTAssertTrue(
            try key.publicKey().verify(signature: again.sign(digest: digest, algorithm: .sha256), digest: digest))
    }

    func testRefusesAPublicPointThatIsNotTheKeys() throws {
        // SEC1 ends with the public point: put another key's point there.
        let sec1DER = try XCTUnwrap(try PEMBlock.readAll(Array(Self.sec1PEM.utf8)).first).der
        let otherPoint = try Self.p256.publicKey().encodedPoint
        let spliced = Array(sec1DER.dropLast(otherPoint.count)) + otherPoint
        let refused = message { try ECPrivateKey(der: spliced, context: self.context) }
        XCTAssertTrue(refused.contains("public point does not match"), refused)
    }

    func testRefusesGarbageAndOtherKinds() throws {
        XCTAssertTrue(message { try ECPrivateKey(der: [], context: self.context) }.contains("no key data"))
        XCTAssertTrue(
            message { try ECPrivateKey(der: [0x30, 0x00], context: self.context) }.contains("invalid key data"))
        var der = try Self.p256.pkcs8DER()
        der.append(0)
        XCTAssertTrue(message { try ECPrivateKey(der: der, context: self.context) }.contains("invalid key data"))
        // An RSA key is no EC key, and an RSA public key no EC public key.
        let rsa = try RSAPrivateKey.parse(fileContents: Array(Fixtures.rsaPKCS1PEM.utf8), context: context)
        XCTAssertTrue(
            message { try ECPrivateKey(der: try rsa.pkcs8DER(), context: self.context) }.contains("not an EC key"))
        XCTAssertTrue(
            message { try ECPublicKey(publicKeyInfo: rsa.publicKeyInfo, context: self.context) }.contains(
                "not an EC key"))
        let reference = "-----BEGIN CLOUDHSM KEY REFERENCE-----\nMAA=\n-----END CLOUDHSM KEY REFERENCE-----\n"
        XCTAssertTrue(
            message { try PrivateKey.parse(fileContents: Array(reference.utf8), context: self.context) }.contains(
                "key reference"))
        XCTAssertTrue(
            message {
                try PrivateKey.parse(
                    fileContents: Array("-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n".utf8),
                    context: self.context)
            }.contains("not an RSA or EC private key"))
    }

    func testSignRefusesInputsThatAreNoDigest() {
        let key = Self.p256
        for (length, algorithm) in [(31, DigestAlgorithm.sha256), (32, .sha384), (33, .none), (0, .none), (100, .none)]
        {
            let refused = message { try key.sign(digest: [UInt8](repeating: 1, count: length), algorithm: algorithm) }
            XCTAssertTrue(refused.hasPrefix("invalid argument: ECDSA input is \(length) bytes"), refused)
        }
        for length in ECDSAInput.acceptedLengths {
            XCTAssertNoThrow(try key.sign(digest: [UInt8](repeating: 1, count: length), algorithm: .none))
        }
    }

    func testConcurrentSigningOnOneKey() throws {
        let digest = try Digest.hash([9], algorithm: .sha256, context: context)
        let publicKey = try Self.p256.publicKey()
        let failures = Failures()
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                for _ in 0..<50 {
                    // ECDSA signatures are randomised: each must verify, none need match.
                    guard let signature = try? Self.p256.sign(digest: digest, algorithm: .sha256),
                        publicKey.verify(signature: signature, digest: digest)
                    else {
                        failures.add()
                        continue
                    }
                }
                done.leave()
            }
        }
        done.wait()
        XCTAssertEqual(failures.count, 0)
    }

    func testPublicKeyPEMAndRSAMechanismsRefuseECDSA() throws {
        let pem = try Self.p256.publicKey().pemEncoded()
        XCTAssertEqual(try PEMBlock.readAll(Array(pem.utf8)).first?.der, Self.p256.publicKeyInfo)
        let rsa = try RSAPrivateKey.parse(fileContents: Array(Fixtures.rsaPKCS1PEM.utf8), context: context)
        let refused = message {
            try rsa.sign(digest: [UInt8](repeating: 1, count: 32), mechanism: .ecdsa(digest: .sha256))
        }
        XCTAssertTrue(refused.contains("ECDSA is a mechanism of EC keys"), refused)
    }
}
