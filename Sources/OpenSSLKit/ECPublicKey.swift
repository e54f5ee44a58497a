// An EC public key: the public half the node reports for every EC key object, what the
// tools show of it, and ECDSA verification on the host side. Also the EVP_PKEY reads an
// EC key needs (its curve, its encoded point), shared with ECPrivateKey.

import COpenSSL
import CloudHSMCore

/// An EC public key on a supported curve, parsed from a SubjectPublicKeyInfo.
public final class ECPublicKey {
    let key: OwnedPKey
    private let context: CryptoContext
    public let curve: ECCurve
    public let publicKeyInfo: [UInt8]

    /// - Throws: `CryptoError.invalidKeyData` unless `publicKeyInfo` is exactly one DER
    ///   SubjectPublicKeyInfo of an EC key; `CryptoError.invalidArgument` naming the
    ///   curve when it is not P-256, P-384 or P-521.
    public init(publicKeyInfo: [UInt8], context: CryptoContext) throws {
        let parsed = decodeWhole(publicKeyInfo) { d2i_PUBKEY_ex(nil, $0, $1, context.pointer, nil) }
        guard let parsed else {
            clearOpenSSLErrors()
            throw CryptoError.invalidKeyData("not a DER SubjectPublicKeyInfo")
        }
        let key = OwnedPKey(taking: parsed)
        guard key.isA("EC") else { throw CryptoError.invalidKeyData("the public key is not an EC key") }
        self.curve = try key.supportedCurve()
        // Explicit parameters of a named curve are written back as the curve's name.
        guard EVP_PKEY_set_utf8_string_param(key.pointer, "encoding", "named_curve") == 1 else {
            throw OpenSSLError.capture("naming the key's curve")
        }
        self.key = key
        self.context = context
        self.publicKeyInfo = try key.publicKeyInfo()
    }

    /// The public point as X9.62 octets: 0x04, then X and Y, each `curve.coordinateLength`.
    public var encodedPoint: [UInt8] { (try? key.octetStringParameter("encoded-pub-key")) ?? [] }

    /// True only when `signature` (DER ECDSA-Sig-Value) is a valid signature of `digest`.
    public func verify(signature: [UInt8], digest: [UInt8]) -> Bool {
        do {
            let operation = try OwnedPKeyContext(key: key, context: context)
            try operation.check(EVP_PKEY_verify_init(operation.pointer), "starting an ECDSA verification")
            let result = signature.withUnsafeBufferPointer { sig in
                digest.withUnsafeBufferPointer { tbs in
                    EVP_PKEY_verify(operation.pointer, sig.baseAddress, sig.count, tbs.baseAddress, tbs.count)
                }
            }
            clearOpenSSLErrors()
            return result == 1
        } catch {
            clearOpenSSLErrors()
            return false
        }
    }

    /// The key as a "PUBLIC KEY" PEM block.
    public func pemEncoded() -> String {
        (try? PEMBlock.write(label: "PUBLIC KEY", der: publicKeyInfo)) ?? ""
    }
}

// Immutable after init; OpenSSL allows concurrent operations on one EVP_PKEY, each with
// its own EVP_PKEY_CTX.
extension ECPublicKey: @unchecked Sendable {}

extension OwnedPKey {
    /// The key's curve when it is a named curve the nodes support (explicit parameters
    /// count when they are a named curve's: OpenSSL names them when it reads them).
    ///
    /// - Throws: `CryptoError.invalidArgument` naming the curve otherwise (explicit
    ///   parameters of no known curve have no name, and are refused as such).
    func supportedCurve() throws -> ECCurve {
        var buffer = [CChar](repeating: 0, count: 80)
        var length = 0
        guard EVP_PKEY_get_utf8_string_param(pointer, "group", &buffer, buffer.count, &length) == 1
        else {
            clearOpenSSLErrors()
            throw CryptoError.invalidArgument(
                "the EC key has explicit curve parameters, not a named curve; the HSMs support P-256, P-384 and P-521")
        }
        let name = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let curve = ECCurve(name: name) else {
            throw CryptoError.invalidArgument(
                "curve not supported: \(name.escapingControlCharacters); the HSMs support P-256, P-384 and P-521")
        }
        return curve
    }

    /// An octet-string parameter ("encoded-pub-key", "priv").
    func octetStringParameter(_ name: String) throws -> [UInt8] {
        var length = 0
        guard EVP_PKEY_get_octet_string_param(pointer, name, nil, 0, &length) == 1 else {
            throw OpenSSLError.capture("reading key parameter \(name)")
        }
        var out = [UInt8](repeating: 0, count: length)
        let ok = out.withUnsafeMutableBufferPointer {
            EVP_PKEY_get_octet_string_param(pointer, name, $0.baseAddress, $0.count, &length)
        }
        guard ok == 1 else { throw OpenSSLError.capture("reading key parameter \(name)") }
        out.removeSubrange(min(length, out.count)...)
        return out
    }

    /// DER PKCS#8 PrivateKeyInfo of a private key.
    func privateKeyInfo() throws -> [UInt8] {
        guard let info = EVP_PKEY2PKCS8(pointer) else { throw OpenSSLError.capture("building PKCS#8") }
        defer { PKCS8_PRIV_KEY_INFO_free(info) }
        let length = i2d_PKCS8_PRIV_KEY_INFO(info, nil)
        guard length > 0 else { throw OpenSSLError.capture("measuring PKCS#8") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_PKCS8_PRIV_KEY_INFO(info, &cursor)
        }
        guard written == length else { throw OpenSSLError.capture("encoding PKCS#8") }
        return out
    }
}
