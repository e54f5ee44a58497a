// What one key type's signatures add to the common signature context (pkcs11-provider's
// sig/rsasig.c and sig/ecdsa.c beside sig/signature.c): its settings and their
// parameters, how a digest becomes an HSM mechanism, and how the default provider is told
// the same settings for an AlgorithmIdentifier. Verification is the same for every type:
// the default provider runs it on the public key (SignatureContext).

import CloudHSMCore

protocol SignatureScheme {
    /// The key type whose keys the scheme signs with.
    static var keyType: any ProviderKeyType.Type { get }
    /// The digest of a digest-sign when the application names none.
    static var defaultDigest: HSMDigest { get }

    /// The settings a new signing operation starts with.
    init()

    /// Back to the settings a new operation starts with (in place: an init runs for every
    /// probe libssl makes, so it allocates nothing).
    mutating func reset()

    /// Applies an application's settings to a signing operation.
    ///
    /// - Parameters:
    ///   - digest: the operation's digest, which `digest` and `properties` parameters (and
    ///     a scheme's default) set.
    ///   - digestIsFixed: true during a digest-sign, when the digest hashing the data can
    ///     no longer change.
    ///   - properties: the property query the context was made with.
    /// - Throws: an error naming the parameter the HSMs cannot honour; nothing is ignored.
    mutating func apply(
        _ params: ParamReader, digest: inout HSMDigest?, digestIsFixed: Bool, properties: String?
    ) throws

    /// Answers the settings of a signing operation (everything but `algorithm-id`).
    func answer(_ writer: ParamWriter, digest: HSMDigest?) throws

    /// What the HSM is asked to do with `input` (a digest, or a raw block).
    func mechanism(for input: [UInt8], digest: HSMDigest?, key: ProviderKey) throws -> SignMechanism

    /// The same settings as a default-provider verification takes them, so that it
    /// answers the AlgorithmIdentifier X509_sign embeds.
    func verificationSettings(digest: HSMDigest?, key: ProviderKey) throws -> [ParamValue]

    /// The largest signature, in bytes.
    func signatureLength(for key: ProviderKey) -> Int
}

extension SignatureScheme {
    mutating func reset() { self = Self() }
}
