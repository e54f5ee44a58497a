// An EC private key held in memory, ready to sign: the node parses each EC key once into
// one of these and serves every ECDSA signature from it, as it does with RSAPrivateKey.

import COpenSSL
import CloudHSMCore
import Synchronization

/// An EC private key on P-256, P-384 or P-521, in a library context.
///
/// The key never changes after init, and every signature uses an `EVP_PKEY_CTX` of its
/// own (borrowed from `signers` or made for it), so many threads may sign with one
/// object at the same time.
public final class ECPrivateKey {
    let key: OwnedPKey
    private let context: CryptoContext
    /// Signing operations already initialised, reused: making one costs an algorithm
    /// fetch under OpenSSL 3.0's global lock, a sizeable share of a P-256 signature. No
    /// digest is set on them (the node checks the input's length itself), so one kind
    /// serves every digest.
    private let signers = Mutex<[OwnedPKeyContext]>([])
    private static let idleSigners = 16
    public let curve: ECCurve
    /// DER SubjectPublicKeyInfo of the public half (named curve, uncompressed point).
    public let publicKeyInfo: [UInt8]

    private init(key: OwnedPKey, context: CryptoContext) throws {
        guard key.isA("EC") else { throw CryptoError.invalidKeyData("not an EC key") }
        let curve = try key.supportedCurve()
        // A key read with explicit parameters of a named curve would be written back with
        // them: everything the nodes hand out names the curve instead, as TLS requires.
        guard EVP_PKEY_set_utf8_string_param(key.pointer, "encoding", "named_curve") == 1 else {
            throw OpenSSLError.capture("naming the key's curve")
        }
        self.curve = curve
        self.key = key
        self.context = context
        self.publicKeyInfo = try key.publicKeyInfo()
        guard ECCurve(publicKeyInfo: publicKeyInfo) == curve else {
            throw CryptoError.invalidKeyData("the EC key's public key does not name its curve \(curve.name)")
        }
    }

    /// Generates a new key pair on `curve`.
    ///
    /// - Throws: `CryptoError.invalidArgument` naming the curve unless it is supported.
    public static func generate(curve: ECCurve, context: CryptoContext) throws -> ECPrivateKey {
        guard let group = curve.nistName else { throw CryptoError.invalidArgument(curve.problem ?? curve.name) }
        let operation = try OwnedPKeyContext(algorithm: "EC", context: context)
        try operation.check(EVP_PKEY_keygen_init(operation.pointer), "starting EC key generation")
        try operation.check(EVP_PKEY_CTX_set_group_name(operation.pointer, group), "setting the curve \(group)")
        var generated: OpaquePointer? = nil
        guard EVP_PKEY_generate(operation.pointer, &generated) > 0, let generated else {
            throw OpenSSLError.capture("generating an EC key on \(group)")
        }
        return try ECPrivateKey(key: OwnedPKey(taking: generated), context: context)
    }

    /// Parses a DER private key: PKCS#8 PrivateKeyInfo or SEC1 ECPrivateKey (with its
    /// curve named inside), and checks that its public point belongs to its private value.
    ///
    /// - Throws: `CryptoError.invalidKeyData` for anything else, including other key
    ///   types, trailing bytes and a public point that does not match;
    ///   `CryptoError.invalidArgument` naming the curve when it is not supported.
    public convenience init(der: [UInt8], context: CryptoContext) throws {
        guard !der.isEmpty else { throw CryptoError.invalidKeyData("no key data") }
        let parsed = decodeWhole(der) { d2i_AutoPrivateKey_ex(nil, $0, $1, context.pointer, nil) }
        guard let parsed else {
            clearOpenSSLErrors()
            throw CryptoError.invalidKeyData("not a DER-encoded EC private key (PKCS#8 or SEC1)")
        }
        try self.init(parsed: OwnedPKey(taking: parsed), context: context)
    }

    /// Takes a key parsed elsewhere (PrivateKey's file reader), with the same checks.
    convenience init(parsed key: OwnedPKey, context: CryptoContext) throws {
        guard key.isA("EC") else { throw CryptoError.invalidKeyData("the key is not an EC key") }
        try self.init(key: key, context: context)
        // A key whose stored public point is not its own would sign with one key and
        // show another: refused here, never found out by a failing verification.
        let check = try OwnedPKeyContext(key: key, context: context)
        guard EVP_PKEY_pairwise_check(check.pointer) == 1 else {
            clearOpenSSLErrors()
            throw CryptoError.invalidKeyData("the EC key's public point does not match its private value")
        }
    }

    /// The key as DER PKCS#8 PrivateKeyInfo: plaintext secret material, only for
    /// encrypting at rest or wrapping.
    public func pkcs8DER() throws -> [UInt8] { try key.privateKeyInfo() }

    /// Signs a digest with ECDSA.
    ///
    /// - Parameter algorithm: the digest `digest` was made with; its length must match.
    ///   `.none` accepts any of `ECDSAInput.acceptedLengths`.
    /// - Returns: a DER `ECDSA-Sig-Value` (SEQUENCE of r and s).
    /// - Throws: `CryptoError.invalidArgument` when the input is not such a digest.
    public func sign(digest: [UInt8], algorithm: DigestAlgorithm) throws -> [UInt8] {
        if let problem = ECDSAInput.problem(length: digest.count, digest: algorithm) {
            throw CryptoError.invalidArgument(problem)
        }
        let operation: OwnedPKeyContext
        if let idle = signers.withLock({ $0.popLast() }) {
            operation = idle
        } else {
            operation = try OwnedPKeyContext(key: key, context: context)
            try operation.check(EVP_PKEY_sign_init(operation.pointer), "starting an ECDSA signature")
        }
        let signature = try operation.run(digest, "ECDSA signing") { EVP_PKEY_sign($0, $1, $2, $3, $4) }
        // Only an operation that just succeeded goes back for reuse.
        signers.withLock { idle in
            if idle.count < Self.idleSigners { idle.append(operation) }
        }
        return signature
    }

    /// The public half as its own object.
    public func publicKey() throws -> ECPublicKey {
        try ECPublicKey(publicKeyInfo: publicKeyInfo, context: context)
    }
}

// The key pointer is written only in init, and `signers` is behind its Mutex; OpenSSL
// allows concurrent operations on one EVP_PKEY, each with its own EVP_PKEY_CTX, and an
// idle EVP_PKEY_CTX is handed to one thread at a time.
extension ECPrivateKey: @unchecked Sendable {}
