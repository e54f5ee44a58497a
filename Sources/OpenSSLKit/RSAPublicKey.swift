// An RSA public key: verification and encryption on the host side, and the public
// half the node reports for every RSA key object.

import COpenSSL
import CloudHSMCore

/// An RSA public key parsed from a SubjectPublicKeyInfo.
public final class RSAPublicKey {
    let key: OwnedPKey
    private let context: CryptoContext
    private let digests: DigestTable
    public let publicKeyInfo: [UInt8]
    public let modulusBits: Int
    public let modulusLength: Int

    /// - Throws: `CryptoError.invalidKeyData` unless `publicKeyInfo` is exactly one DER
    ///   SubjectPublicKeyInfo of an RSA key.
    public init(publicKeyInfo: [UInt8], context: CryptoContext) throws {
        let parsed = decodeWhole(publicKeyInfo) { d2i_PUBKEY_ex(nil, $0, $1, context.pointer, nil) }
        guard let parsed else {
            clearOpenSSLErrors()
            throw CryptoError.invalidKeyData("not a DER SubjectPublicKeyInfo")
        }
        let key = OwnedPKey(taking: parsed)
        guard key.isA("RSA") else { throw CryptoError.invalidKeyData("the public key is not an RSA key") }
        self.key = key
        self.context = context
        self.digests = try DigestTable(context: context)
        self.publicKeyInfo = try key.publicKeyInfo()
        self.modulusBits = key.bits
        self.modulusLength = key.size
    }

    /// The modulus n, unsigned big-endian.
    public var modulus: [UInt8] { (try? key.bigNumberParameter("n")) ?? [] }

    /// The public exponent e, unsigned big-endian.
    public var publicExponent: [UInt8] { (try? key.bigNumberParameter("e")) ?? [] }

    /// True only when `signature` is a valid signature of `digest` under `mechanism`.
    public func verify(signature: [UInt8], digest: [UInt8], mechanism: SignMechanism) -> Bool {
        do {
            try mechanism.validate(inputLength: digest.count, modulusLength: modulusLength)
            let operation = try OwnedPKeyContext(key: key, context: context)
            try operation.check(EVP_PKEY_verify_init(operation.pointer), "starting an RSA verification")
            try mechanism.configure(operation, digests: digests)
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

    /// Encrypts `data` (PKCS#1 v1.5, OAEP, or raw for a modulus-sized block).
    public func encrypt(_ data: [UInt8], mechanism: DecryptMechanism) throws -> [UInt8] {
        let operation = try OwnedPKeyContext(key: key, context: context)
        try operation.check(EVP_PKEY_encrypt_init(operation.pointer), "starting an RSA encryption")
        try mechanism.configure(operation, digests: digests)
        return try operation.run(data, "RSA encryption") { EVP_PKEY_encrypt($0, $1, $2, $3, $4) }
    }

    /// The key as a "PUBLIC KEY" PEM block.
    public func pemEncoded() -> String {
        (try? PEMBlock.write(label: "PUBLIC KEY", der: publicKeyInfo)) ?? ""
    }
}

// Immutable after init; OpenSSL allows concurrent operations on one EVP_PKEY, each with
// its own EVP_PKEY_CTX.
extension RSAPublicKey: @unchecked Sendable {}
