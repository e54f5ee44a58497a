// An RSA private key held in memory, ready to sign and decrypt: the node parses each key
// once into one of these and serves every operation from it.

import COpenSSL
import CloudHSMCore
import Synchronization

/// An RSA private key in a library context.
///
/// The key never changes after init, and every operation uses an `EVP_PKEY_CTX` of its
/// own (borrowed from `signers` or `decrypters`, or made for it), so many threads may sign and decrypt
/// with one object at the same time.
public final class RSAPrivateKey {
    let key: OwnedPKey
    private let context: CryptoContext
    private let digests: DigestTable
    /// Signing operations already initialised and configured, by mechanism. Making and
    /// configuring one costs several algorithm fetches (each under OpenSSL 3.0's global
    /// lock), about a tenth of an RSA-2048 signature; an idle one is reused instead.
    private let signers = Mutex<[SignMechanism: [OwnedPKeyContext]]>([:])
    private static let idleSignersPerMechanism = 16
    /// Decrypting operations ready for reuse, the same way; a list rather than a table by
    /// mechanism because an OAEP label may be anything: at most `idleDecrypters` are kept,
    /// the least recently used going first.
    private let decrypters = Mutex<[(mechanism: DecryptMechanism, operation: OwnedPKeyContext)]>([])
    private static let idleDecrypters = 16
    /// DER SubjectPublicKeyInfo of the public half.
    public let publicKeyInfo: [UInt8]
    public let modulusBits: Int
    /// Bytes in the modulus: the size of every signature and raw block.
    public let modulusLength: Int
    /// The modulus n, unsigned big-endian: a raw block must be smaller.
    public let modulus: [UInt8]

    private init(key: OwnedPKey, context: CryptoContext) throws {
        guard key.isA("RSA") else { throw CryptoError.invalidKeyData("not an RSA key") }
        self.key = key
        self.context = context
        self.digests = try DigestTable(context: context)
        self.publicKeyInfo = try key.publicKeyInfo()
        self.modulusBits = key.bits
        self.modulusLength = key.size
        self.modulus = try key.bigNumberParameter("n")
    }

    /// Generates a new key pair.
    ///
    /// - Parameters:
    ///   - bits: modulus size (the node allows 2048, 3072 and 4096).
    ///   - publicExponent: odd, 3 to 2^32-1 (`RSAPublicExponent`), usually 65537.
    public static func generate(bits: Int, publicExponent: UInt64, context: CryptoContext) throws -> RSAPrivateKey {
        guard bits >= 1024, bits <= 16384 else { throw CryptoError.invalidArgument("RSA key size \(bits) bits") }
        guard RSAPublicExponent.isAllowed(publicExponent) else {
            throw CryptoError.invalidArgument(
                "RSA public exponent \(publicExponent) must be \(RSAPublicExponent.allowedDescription)")
        }
        let operation = try OwnedPKeyContext(algorithm: "RSA", context: context)
        try operation.check(EVP_PKEY_keygen_init(operation.pointer), "starting RSA key generation")
        try operation.check(EVP_PKEY_CTX_set_rsa_keygen_bits(operation.pointer, Int32(bits)), "setting the key size")
        guard let exponent = BN_new() else { throw OpenSSLError.capture("allocating the public exponent") }
        defer { BN_free(exponent) }
        try operation.check(BN_set_word(exponent, UInt(publicExponent)), "setting the public exponent")
        try operation.check(
            EVP_PKEY_CTX_set1_rsa_keygen_pubexp(operation.pointer, exponent), "setting the public exponent")
        var generated: OpaquePointer? = nil
        guard EVP_PKEY_generate(operation.pointer, &generated) > 0, let generated else {
            throw OpenSSLError.capture("generating an RSA key")
        }
        return try RSAPrivateKey(key: OwnedPKey(taking: generated), context: context)
    }

    /// Parses a DER private key: PKCS#8 PrivateKeyInfo or PKCS#1 RSAPrivateKey.
    ///
    /// - Throws: `CryptoError.invalidKeyData` for anything else, including other key
    ///   types and trailing bytes.
    public convenience init(der: [UInt8], context: CryptoContext) throws {
        guard !der.isEmpty else { throw CryptoError.invalidKeyData("no key data") }
        let parsed = decodeWhole(der) { d2i_AutoPrivateKey_ex(nil, $0, $1, context.pointer, nil) }
        guard let parsed else {
            clearOpenSSLErrors()
            throw CryptoError.invalidKeyData("not a DER-encoded RSA private key (PKCS#8 or PKCS#1)")
        }
        let owned = OwnedPKey(taking: parsed)
        guard owned.isA("RSA") else {
            throw CryptoError.invalidKeyData("the key is not an RSA key")
        }
        try self.init(key: owned, context: context)
    }

    /// Reads a key file as `PrivateKey.parse` does, and requires an RSA key.
    ///
    /// - Throws: `CryptoError.invalidKeyData` naming what the file is instead.
    public static func parse(fileContents: [UInt8], context: CryptoContext) throws -> RSAPrivateKey {
        guard case .rsa(let key) = try PrivateKey.parse(fileContents: fileContents, context: context) else {
            throw CryptoError.invalidKeyData("the key is not an RSA key")
        }
        return key
    }

    /// The key as DER PKCS#8 PrivateKeyInfo: plaintext secret material, only for
    /// encrypting at rest or wrapping.
    public func pkcs8DER() throws -> [UInt8] {
        guard let info = EVP_PKEY2PKCS8(key.pointer) else { throw OpenSSLError.capture("building PKCS#8") }
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

    /// Signs a digest (or, for `.raw` and `.pkcs1(.none)`, the data as given).
    ///
    /// - Throws: `CryptoError.invalidArgument` when the input does not fit the mechanism.
    public func sign(digest: [UInt8], mechanism: SignMechanism) throws -> [UInt8] {
        try mechanism.validate(
            inputLength: digest.count, modulusLength: modulusLength, rawInput: (bytes: digest, modulus: modulus))
        let operation: OwnedPKeyContext
        if let idle = signers.withLock({ $0[mechanism]?.popLast() }) {
            operation = idle
        } else {
            operation = try OwnedPKeyContext(key: key, context: context)
            try operation.check(EVP_PKEY_sign_init(operation.pointer), "starting an RSA signature")
            try mechanism.configure(operation, digests: digests)
        }
        let signature = try operation.run(digest, "RSA signing") { EVP_PKEY_sign($0, $1, $2, $3, $4) }
        // Only an operation that just succeeded goes back for reuse.
        signers.withLock { idle in
            if idle[mechanism, default: []].count < Self.idleSignersPerMechanism {
                idle[mechanism, default: []].append(operation)
            }
        }
        return signature
    }

    /// Decrypts with the private key.
    ///
    /// - Throws: `CryptoError.decryptFailed` for bad padding or a wrong-sized input.
    public func decrypt(_ data: [UInt8], mechanism: DecryptMechanism) throws -> [UInt8] {
        guard data.count == modulusLength else {
            throw CryptoError.invalidArgument("ciphertext is \(data.count) bytes, the modulus is \(modulusLength)")
        }
        let operation: OwnedPKeyContext
        let idle = decrypters.withLock { idle -> OwnedPKeyContext? in
            guard let index = idle.lastIndex(where: { $0.mechanism == mechanism }) else { return nil }
            return idle.remove(at: index).operation
        }
        if let idle {
            operation = idle
        } else {
            operation = try OwnedPKeyContext(key: key, context: context)
            try operation.check(EVP_PKEY_decrypt_init(operation.pointer), "starting an RSA decryption")
            try mechanism.configure(operation, digests: digests)
        }
        let plaintext: [UInt8]
        do {
            plaintext = try operation.run(data, "RSA decryption") { EVP_PKEY_decrypt($0, $1, $2, $3, $4) }
        } catch is OpenSSLError {
            throw CryptoError.decryptFailed
        }
        // Only an operation that just succeeded goes back for reuse.
        decrypters.withLock { idle in
            if idle.count >= Self.idleDecrypters { idle.removeFirst() }
            idle.append((mechanism, operation))
        }
        return plaintext
    }

    /// The public half as its own object.
    public func publicKey() throws -> RSAPublicKey {
        try RSAPublicKey(publicKeyInfo: publicKeyInfo, context: context)
    }
}

// The key pointer and digest table are written only in init, and `signers` and
// `decrypters` are behind their Mutexes; OpenSSL allows concurrent operations on one EVP_PKEY, each with its own
// EVP_PKEY_CTX, and an idle EVP_PKEY_CTX is handed to one thread at a time.
extension RSAPrivateKey: @unchecked Sendable {}
