// The signature operation's state, common to every key type (pkcs11-provider's
// sig/signature.c). Signing hashes locally and sends only the digest to the HSM: one round
// trip per signature, and nothing on the network in any init (libssl calls
// digest_sign_init as a probe for every candidate algorithm of every handshake).
// Verification and recovery run on a default-provider operation in the provider's private
// library context, given the application's parameters as they are, so public-key results
// and parameter handling are exactly OpenSSL's own.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

final class SignatureContext {
    enum Operation: CustomStringConvertible {
        case sign, verify, verifyRecover

        var description: String {
            switch self {
            case .sign: return "signing"
            case .verify: return "verification"
            case .verifyRecover: return "signature recovery"
            }
        }
    }

    /// The default provider's operation a verification runs on.
    private enum Verification {
        case key(EVPKeyOperation)
        case digest(EVPDigestVerification)

        func copy() throws -> Verification {
            switch self {
            case .key(let operation): return .key(try operation.copy())
            case .digest(let operation): return .digest(try operation.copy())
            }
        }
    }

    /// The key type's settings for signing (RSA: padding, salt length, MGF1 digest).
    private(set) var scheme: any SignatureScheme
    /// The property query of newctx, for fetching digests the application names.
    let properties: String?
    private(set) var key: ProviderKey?
    /// What the context was last initialised for; nil before any init.
    private(set) var operation: Operation?
    /// The digest a signature is made over; nil for pre-hashed input signed as given.
    private(set) var digest: HSMDigest?
    /// True from digest_sign_init to the end: the digest hashing the data is fixed.
    private(set) var isDigestOperation = false
    /// The running hash of a digest-sign, made on the first update.
    private var hash: EVPDigestOperation?
    private var verification: Verification?

    init(scheme: any SignatureScheme, properties: String?) {
        self.scheme = scheme
        self.properties = properties.flatMap { $0.isEmpty ? nil : $0 }
    }

    func copy() throws -> SignatureContext {
        let twin = SignatureContext(scheme: scheme, properties: properties)
        twin.key = key
        twin.operation = operation
        twin.digest = digest
        twin.isDigestOperation = isDigestOperation
        twin.hash = try hash?.copy()
        twin.verification = try verification?.copy()
        return twin
    }

    // MARK: Initialisation

    /// sign_init and digest_sign_init. Touches no network and fetches nothing for the
    /// digests the HSMs sign.
    ///
    /// - Parameter digestName: digest_sign_init's digest; nil for sign_init (pre-hashed
    ///   input, whose digest comes from parameters).
    func beginSigning(key keydata: UnsafeRawPointer?, digestName: String?, isDigestOperation: Bool, params: ParamReader)
        throws
    {
        let key = try resolveKey(keydata)
        guard key.isHSMKey else {
            throw ProviderError(
                .unsupported, "signing needs an HSM key; this \(key.type.displayName) key is public only")
        }
        try requireScheme(for: key)
        reset(key: key, operation: .sign)
        if isDigestOperation {
            if let digestName, !digestName.isEmpty {
                digest = try HSMDigest.named(digestName, properties: properties, for: "signing")
            } else if digest == nil {
                digest = type(of: scheme).defaultDigest
            }
        }
        try scheme.apply(params, digest: &digest, digestIsFixed: false, properties: properties)
        self.isDigestOperation = isDigestOperation
    }

    /// verify_init, verify_recover_init and digest_verify_init: a default-provider
    /// operation on the public key, given the parameters as they came.
    func beginVerifying(
        _ operation: Operation, key keydata: UnsafeRawPointer?, digestName: String?, isDigestOperation: Bool,
        params: UnsafePointer<OSSL_PARAM>?
    ) throws {
        let key = try resolveKey(keydata)
        try requireScheme(for: key)
        reset(key: key, operation: operation)
        trace("\(operation) with a \(key.type.displayName) public key, run by the default provider")
        let context = try runtime.library().context
        if isDigestOperation {
            verification = .digest(
                try EVPDigestVerification(
                    digest: digestName.flatMap { $0.isEmpty ? nil : $0 }, properties: properties, key: key.publicKey,
                    context: context, parameters: params))
        } else {
            let shadow = try EVPKeyOperation(
                operation == .verify ? .verify : .verifyRecover, key: key.publicKey, context: context)
            if let params { try shadow.setParameters(params) }
            verification = .key(shadow)
        }
        self.isDigestOperation = isDigestOperation
    }

    private func resolveKey(_ keydata: UnsafeRawPointer?) throws -> ProviderKey {
        // A NULL key re-initialises the context with the key it has (EVP_DigestSignInit's reinit).
        if keydata == nil, let key { return key }
        return try KeyHolder.key(keydata)
    }

    private func requireScheme(for key: ProviderKey) throws {
        let expected = type(of: scheme).keyType
        guard key.type == expected else {
            throw ProviderError(
                .invalidInput, "a \(expected.displayName) signature cannot use a \(key.type.displayName) key")
        }
    }

    private func reset(key: ProviderKey, operation: Operation) {
        if key !== self.key { digest = nil }
        self.key = key
        self.operation = operation
        scheme.reset()
        hash = nil
        verification = nil
        isDigestOperation = false
    }

    // MARK: Signing

    /// The signature of pre-hashed `input` (or of a raw block), made in the HSM.
    func sign(_ input: [UInt8]) throws -> [UInt8] {
        let key = try signingKey()
        let mechanism = try scheme.mechanism(for: input, digest: digest, key: key)
        trace("sign: key handle \(key.reference?.handle ?? 0), \(mechanism), \(input.count) bytes")
        return try runtime.keys.sign(key, mechanism: mechanism, input: input)
    }

    /// Adds data to a digest-sign.
    func update(_ data: UnsafeRawBufferPointer) throws {
        switch verification {
        case .digest(let operation)?: try operation.update(data)
        default: try runningHash().update(data)
        }
    }

    /// The signature of everything hashed so far; the context could take more data.
    func finishSigning() throws -> [UInt8] {
        try sign(try runningHash().currentDigest())
    }

    /// The one-shot EVP_DigestSign libssl uses for every handshake signature: one hash of
    /// the message, one HSM round trip, no running hash and no context copy.
    func sign(message: UnsafeRawBufferPointer) throws -> [UInt8] {
        try sign(try digestImplementation().hash(message))
    }

    var signatureLength: Int? {
        guard let key else { return nil }
        return scheme.signatureLength(for: key)
    }

    private func signingKey() throws -> ProviderKey {
        guard operation == .sign, let key else {
            throw ProviderError(.invalidInput, "this signature context was not initialised for signing")
        }
        return key
    }

    private func digestImplementation() throws -> EVPDigest {
        guard isDigestOperation, let digest else {
            throw ProviderError(.invalidInput, "this signature context was not initialised for a digest-sign")
        }
        return try runtime.library().digest(digest, properties: properties)
    }

    private func runningHash() throws -> EVPDigestOperation {
        if let hash { return hash }
        let made = try EVPDigestOperation(digest: digestImplementation())
        hash = made
        return made
    }

    // MARK: Verification

    func verify(signature: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer) throws {
        guard case .key(let operation)? = verification, self.operation == .verify else {
            throw ProviderError(.invalidInput, "this signature context was not initialised for verification")
        }
        guard operation.verify(signature: signature, input: input) else {
            throw ProviderError(
                .signatureMismatch, "the signature does not verify with this \(key?.type.displayName ?? "") public key")
        }
    }

    func finishVerifying(signature: UnsafeRawBufferPointer) throws {
        guard case .digest(let operation)? = verification else {
            throw ProviderError(.invalidInput, "this signature context was not initialised for a digest-verify")
        }
        guard operation.finish(signature: signature) else {
            throw ProviderError(
                .signatureMismatch, "the signature does not verify with this \(key?.type.displayName ?? "") public key")
        }
    }

    func recover(signature: UnsafeRawBufferPointer) throws -> [UInt8] {
        guard case .key(let operation)? = verification, self.operation == .verifyRecover else {
            throw ProviderError(.invalidInput, "this signature context was not initialised for signature recovery")
        }
        return try operation.recover(signature: signature)
    }

    // MARK: Parameters

    func setParameters(_ params: UnsafePointer<OSSL_PARAM>?) throws {
        guard let params else { return }
        switch operation {
        case nil:
            throw ProviderError(.invalidInput, "signature parameters were set before any init")
        case .sign:
            try scheme.apply(
                ParamReader(params), digest: &digest, digestIsFixed: isDigestOperation, properties: properties)
        case .verify, .verifyRecover:
            switch verification {
            case .key(let operation)?: try operation.setParameters(params)
            case .digest(let operation)?: try operation.setParameters(params)
            case nil: break
            }
        }
    }

    func getParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>?) throws {
        guard let params else { return }
        switch operation {
        case nil:
            throw ProviderError(.invalidInput, "signature parameters were asked for before any init")
        case .sign:
            let writer = ParamWriter(params)
            try scheme.answer(writer, digest: digest)
            if writer.isRequested("algorithm-id") { try writer.set("algorithm-id", octets: algorithmIdentifier()) }
        case .verify, .verifyRecover:
            switch verification {
            case .key(let operation)?: try operation.getParameters(params)
            case .digest(let operation)?: try operation.getParameters(params)
            case nil: break
            }
        }
    }

    /// The DER AlgorithmIdentifier for the current settings, as the default provider builds
    /// it for the same settings (X509_sign and X509_REQ_sign embed it).
    private func algorithmIdentifier() throws -> [UInt8] {
        let key = try signingKey()
        let settings = try parameterList(scheme.verificationSettings(digest: digest, key: key))
        let shadow = try EVPKeyOperation(.verify, key: key.publicKey, context: runtime.library().context)
        try shadow.setParameters(settings)
        return try shadow.algorithmIdentifier()
    }

    // MARK: Digest parameters

    func setDigestParameters(_ params: UnsafePointer<OSSL_PARAM>?) throws {
        guard let params else { return }
        switch verification {
        case .digest(let operation)?: try operation.setDigestParameters(params)
        default: try runningHash().setParameters(params)
        }
    }

    func getDigestParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>?) throws {
        guard let params else { return }
        switch verification {
        case .digest(let operation)?: try operation.getDigestParameters(params)
        default: try runningHash().getParameters(params)
        }
    }

    var digestParameterTables: (settable: UnsafePointer<OSSL_PARAM>?, gettable: UnsafePointer<OSSL_PARAM>?) {
        guard let implementation = try? digestImplementation() else { return (nil, nil) }
        return (implementation.settableContextParameters, implementation.gettableContextParameters)
    }
}
