// ECDSA signatures (pkcs11-provider's sig/ecdsa.c): the digest and digest size of a
// signing operation, with the default provider's parameter rules
// (providers/implementations/signature/ecdsa_sig.c in OpenSSL 3.0), and how a digest
// becomes an HSM mechanism. The HSMs answer a DER ECDSA-Sig-Value, as OpenSSL's own
// ECDSA_sign writes it. What they cannot do (SHA-3 and SHA-512/t digests, known-answer
// test nonces) is refused by name. Verification is the common layer's.

import COpenSSL
import CloudHSMCore

struct ECDSASignatureScheme: SignatureScheme {
    static let keyType: any ProviderKeyType.Type = ECKeyType.self
    static let defaultDigest = HSMDigest.sha256.spelled("SHA256")

    /// `digest-size`: the input length a pre-hashed signature must have; nil follows the digest.
    private(set) var digestSize: Int?

    init() {}

    mutating func apply(
        _ params: ParamReader, digest: inout HSMDigest?, digestIsFixed: Bool, properties: String?
    ) throws {
        if let kat = try params.unsigned("kat"), kat != 0 {
            throw ProviderError(
                .unsupported,
                "ECDSA known-answer test mode (kat \(kat)) takes the nonce from the application's random source; "
                    + "the HSMs make their own nonces")
        }
        var newDigest = digest
        var size = digestSize
        if let name = try params.string("digest") {
            let named = try HSMDigest.named(
                name, properties: params.string("properties") ?? properties, for: "ECDSA signatures")
            if digestIsFixed, let digest, named != digest {
                throw ProviderError(
                    .unsupported, "digest \(named) != \(digest): the digest of a running digest-sign cannot change")
            }
            newDigest = named
            size = nil
        }
        if let requested = try params.unsigned("digest-size") {
            let current = size ?? newDigest?.length
            if digestIsFixed, let current, Int(requested) != current {
                throw ProviderError(
                    .unsupported,
                    "digest-size \(requested) != \(current): the digest of a running digest-sign cannot change")
            }
            size = Int(requested)
        }
        if newDigest == .md5SHA1 {
            throw ProviderError(
                .unsupported,
                "digest MD5-SHA1 is not one ECDSA signs with (TLS 1.0 and 1.1 use it with RSA keys only); use "
                    + HSMDigest.supportedNames)
        }
        digest = newDigest
        digestSize = size
    }

    /// `digest` as the default provider answers it (the digest's own name, "SHA2-256", and
    /// an empty name before one is set), and `digest-size`.
    func answer(_ writer: ParamWriter, digest: HSMDigest?) throws {
        try writer.set("digest", string: digest?.name.description ?? "")
        if writer.isRequested("digest-size") {
            try writer.set("digest-size", unsigned: UInt64(digestSize ?? digest?.length ?? 0))
        }
    }

    /// The HSMs sign a digest of exactly one of the SHA lengths: the digest's own length
    /// when one is set, any of them for a pre-hashed input with none.
    func mechanism(for input: [UInt8], digest: HSMDigest?, key: ProviderKey) throws -> SignMechanism {
        if let digestSize, input.count != digestSize {
            throw ProviderError(
                .invalidInput, "input is \(input.count) bytes, not the digest size set (\(digestSize))")
        }
        let algorithm = digest?.algorithm ?? .none
        if let problem = ECDSAInput.problem(length: input.count, digest: algorithm) {
            throw ProviderError(.invalidInput, problem)
        }
        return .ecdsa(digest: algorithm)
    }

    func verificationSettings(digest: HSMDigest?, key: ProviderKey) throws -> [ParamValue] {
        guard let digest else { return [] }
        return [.string("digest", digest.name.description)]
    }

    /// The longest DER ECDSA-Sig-Value for the curve (ECDSA_size); signatures are often shorter.
    func signatureLength(for key: ProviderKey) -> Int { key.size }
}

// MARK: - The ECDSA signature's own functions and its table

private func ecdsaSignatureNewContext(_ provider: UnsafeMutableRawPointer?, _ properties: UnsafePointer<CChar>?)
    -> UnsafeMutableRawPointer?
{
    Signature.newContext(ECDSASignatureScheme(), properties: properties)
}

/// The default provider's table (ecdsa_sig.c), word for word.
private let ecdsaSettable = paramTable([
    ("digest", OSSL_PARAM_UTF8_STRING), ("digest-size", OSSL_PARAM_UNSIGNED_INTEGER),
    ("properties", OSSL_PARAM_UTF8_STRING), ("kat", OSSL_PARAM_UNSIGNED_INTEGER),
])

/// During a digest-sign the digest cannot change, so it is not offered.
private let ecdsaSettableWithoutDigest = paramTable([("kat", OSSL_PARAM_UNSIGNED_INTEGER)])

private func ecdsaSignatureSettableParams(_ pointer: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    object(pointer, as: SignatureContext.self)?.isDigestOperation == true ? ecdsaSettableWithoutDigest : ecdsaSettable
}

private let ecdsaGettable = paramTable([
    ("algorithm-id", OSSL_PARAM_OCTET_STRING), ("digest-size", OSSL_PARAM_UNSIGNED_INTEGER),
    ("digest", OSSL_PARAM_UTF8_STRING),
])

private func ecdsaSignatureGettableParams(_ pointer: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    ecdsaGettable
}

enum ECDSASignature {
    static let dispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = Signature.sharedTable
        table.add(SignatureSlot.newContext, ecdsaSignatureNewContext)
        table.add(SignatureSlot.settableContextParams, ecdsaSignatureSettableParams)
        table.add(SignatureSlot.gettableContextParams, ecdsaSignatureGettableParams)
        return table.finished()
    }()
}
