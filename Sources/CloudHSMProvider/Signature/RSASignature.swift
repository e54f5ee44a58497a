// RSA signatures (pkcs11-provider's sig/rsasig.c): the padding, PSS salt length and MGF1
// digest of a signing operation, with the default provider's parameter rules
// (providers/implementations/signature/rsa_sig.c in OpenSSL 3.0), and how a digest
// becomes an HSM mechanism. What the HSMs cannot do (X9.31 padding, digests other than
// SHA-1 and SHA-2) is refused by name. Verification is the common layer's.

import COpenSSL
import CloudHSMCore

/// A PSS salt length as OpenSSL sets it: a byte count or one of its three rules.
enum PSSSaltLength: Equatable, CustomStringConvertible {
    /// As long as the digest (RSA_PSS_SALTLEN_DIGEST, -1; what TLS 1.3 requires).
    case digest
    /// The most the key allows when signing (RSA_PSS_SALTLEN_AUTO, -2, the default; it
    /// means "detect" when verifying).
    case auto
    /// The most the key allows (RSA_PSS_SALTLEN_MAX, -3).
    case maximum
    case bytes(Int)

    init(openSSLValue value: Int) throws {
        switch value {
        case Int(RSA_PSS_SALTLEN_DIGEST): self = .digest
        case Int(RSA_PSS_SALTLEN_AUTO): self = .auto
        case Int(RSA_PSS_SALTLEN_MAX): self = .maximum
        case 0...: self = .bytes(value)
        default: throw ProviderError(.invalidInput, "PSS salt length \(value) is invalid (below -3)")
        }
    }

    var openSSLValue: Int {
        switch self {
        case .digest: return Int(RSA_PSS_SALTLEN_DIGEST)
        case .auto: return Int(RSA_PSS_SALTLEN_AUTO)
        case .maximum: return Int(RSA_PSS_SALTLEN_MAX)
        case .bytes(let count): return count
        }
    }

    /// The word -sigopt and -pkeyopt use for the rule; the number for a byte count.
    var description: String {
        switch self {
        case .digest: return "digest"
        case .auto: return "auto"
        case .maximum: return "max"
        case .bytes(let count): return String(count)
        }
    }

    /// `saltlen` as a word, a decimal string or an integer. A string that is neither is
    /// refused by name (the default provider reads it as 0).
    static func read(_ reader: ParamReader) throws -> PSSSaltLength? {
        guard reader.contains("saltlen") else { return nil }
        guard reader.isString("saltlen") else { return try PSSSaltLength(openSSLValue: reader.int("saltlen") ?? 0) }
        let text = try reader.string("saltlen") ?? ""
        switch text {
        case "digest": return .digest
        case "auto": return .auto
        case "max": return .maximum
        default:
            guard let value = Int(text) else {
                throw ProviderError(
                    .invalidInput, "PSS salt length '\(text)' is neither a number nor digest, max or auto")
            }
            return try PSSSaltLength(openSSLValue: value)
        }
    }

    /// Answers `saltlen` as an integer or a string, whichever the caller's parameter is.
    func write(_ writer: ParamWriter) throws {
        guard writer.isRequested("saltlen") else { return }
        if writer.wantsInteger("saltlen") {
            try writer.set("saltlen", int: openSSLValue)
        } else {
            try writer.set("saltlen", string: description)
        }
    }

    /// The salt a signature with a `keyBits`-bit key and a `digestLength`-byte digest
    /// carries: "auto" and "max" are the most the key allows, as in OpenSSL 3.0's signing.
    func length(digestLength: Int, keyBits: Int) throws -> Int {
        let encodedLength = (keyBits - 1 + 7) / 8
        let maximum = encodedLength - digestLength - 2
        let length: Int
        switch self {
        case .digest: length = digestLength
        case .auto, .maximum: length = maximum
        case .bytes(let count): length = count
        }
        guard length >= 0, length <= maximum else {
            throw ProviderError(
                .invalidInput,
                "PSS salt length \(length) does not fit a \(keyBits)-bit key with a \(digestLength)-byte digest "
                    + "(at most \(max(maximum, 0)))")
        }
        return length
    }
}

struct RSASignatureScheme: SignatureScheme {
    static let keyType: any ProviderKeyType.Type = RSAKeyType.self
    static let defaultDigest = HSMDigest.sha256.spelled("SHA256")
    /// What PSS uses when no digest is set, as in the default provider.
    static let pssDefaultDigest = HSMDigest.sha1

    private(set) var padding = RSAPadding.pkcs1
    private(set) var saltLength = PSSSaltLength.auto
    /// nil: the MGF1 digest follows the signature digest.
    private(set) var mgf1Digest: HSMDigest?

    init() {}

    mutating func apply(
        _ params: ParamReader, digest: inout HSMDigest?, digestIsFixed: Bool, properties: String?
    ) throws {
        // Read everything first, then check the combination, in the default provider's order.
        let digestName = try params.string("digest")
        let digestProperties = try params.string("properties") ?? properties
        var padding = self.padding
        if let mode = try RSAPadding.read(params) {
            switch mode {
            case .pkcs1, .pss, .none: padding = mode
            case .oaep: throw ProviderError(.unsupported, "OAEP padding is for encryption, not RSA signatures")
            case .tls:
                throw ProviderError(.unsupported, "the TLS key exchange padding is for decryption, not signatures")
            case .x931:
                throw ProviderError(
                    .unsupported, "RSA padding mode x931: the HSMs sign with pkcs1, pss or none, not X9.31")
            }
        }
        var saltLength = self.saltLength
        if let length = try PSSSaltLength.read(params) {
            guard padding == .pss else {
                throw ProviderError(
                    .unsupported, "PSS saltlen can only be specified if PSS padding has been specified first")
            }
            saltLength = length
        }
        var mgf1Digest = self.mgf1Digest
        if let name = try params.string("mgf1-digest") {
            guard padding == .pss else {
                throw ProviderError(.unsupported, "mgf1-digest can only be specified with PSS padding")
            }
            mgf1Digest = try HSMDigest.named(
                name, properties: params.string("mgf1-properties") ?? properties, for: "MGF1 in RSA-PSS signatures")
        }
        var newDigest = digest
        if let digestName {
            let named = try HSMDigest.named(digestName, properties: digestProperties, for: "RSA signatures")
            if digestIsFixed, let digest, named != digest {
                throw ProviderError(
                    .unsupported, "digest \(named) != \(digest): the digest of a running digest-sign cannot change")
            }
            newDigest = named
        } else if newDigest == nil, padding == .pss {
            newDigest = Self.pssDefaultDigest
        }
        try Self.check(padding: padding, digest: newDigest, mgf1Digest: mgf1Digest)
        self.padding = padding
        self.saltLength = saltLength
        self.mgf1Digest = mgf1Digest
        digest = newDigest
    }

    /// Combinations the default provider refuses, and those only the HSMs cannot sign.
    private static func check(padding: RSAPadding, digest: HSMDigest?, mgf1Digest: HSMDigest?) throws {
        switch padding {
        case .none:
            if let digest {
                throw ProviderError(
                    .invalidInput, "RSA padding mode none signs a raw block and takes no digest (\(digest) is set)")
            }
        case .pss:
            if digest == .md5SHA1 || mgf1Digest == .md5SHA1 {
                throw ProviderError(.unsupported, "PSS with MD5-SHA1: the HSMs sign MD5-SHA1 with pkcs1 padding only")
            }
        default: break
        }
    }

    func answer(_ writer: ParamWriter, digest: HSMDigest?) throws {
        try padding.write(writer)
        // Before a digest is set the default provider answers empty names (rsa_sig.c's mdname).
        try writer.set("digest", string: digest?.spelling ?? "")
        try writer.set("mgf1-digest", string: (mgf1Digest ?? digest)?.spelling ?? "")
        try saltLength.write(writer)
    }

    func mechanism(for input: [UInt8], digest: HSMDigest?, key: ProviderKey) throws -> SignMechanism {
        switch padding {
        case .pkcs1:
            guard let digest else { return .pkcs1(digest: .none) }
            try Self.checkLength(of: input, digest: digest)
            return .pkcs1(digest: digest.algorithm)
        case .pss:
            let digest = digest ?? Self.pssDefaultDigest
            try Self.checkLength(of: input, digest: digest)
            let mgf1 = mgf1Digest ?? digest
            let salt = try saltLength.length(digestLength: digest.length, keyBits: key.bits)
            return .pss(digest: digest.algorithm, mgf1Digest: mgf1.algorithm, saltLength: UInt32(salt))
        case .none:
            if let problem = RawRSABlock.problem(input, modulus: key.bigNumber("n")) {
                throw ProviderError(.invalidInput, problem)
            }
            return .raw
        case .oaep, .x931, .tls:
            throw ProviderError(.unsupported, "RSA padding mode \(padding) is not supported for signing")
        }
    }

    private static func checkLength(of input: [UInt8], digest: HSMDigest) throws {
        guard input.count == digest.length else {
            throw ProviderError(
                .invalidInput, "input is \(input.count) bytes, not a \(digest) digest (\(digest.length))")
        }
    }

    func verificationSettings(digest: HSMDigest?, key: ProviderKey) throws -> [ParamValue] {
        var values: [ParamValue] = [.int("pad-mode", Int(padding.rawValue))]
        let digest = digest ?? (padding == .pss ? Self.pssDefaultDigest : nil)
        if let digest { values.append(.string("digest", digest.name.description)) }
        if padding == .pss, let digest {
            values.append(.string("mgf1-digest", (mgf1Digest ?? digest).name.description))
            values.append(.int("saltlen", try saltLength.length(digestLength: digest.length, keyBits: key.bits)))
        }
        return values
    }

    func signatureLength(for key: ProviderKey) -> Int { key.size }
}

// MARK: - The RSA signature's own functions and its table

private func rsaSignatureNewContext(_ provider: UnsafeMutableRawPointer?, _ properties: UnsafePointer<CChar>?)
    -> UnsafeMutableRawPointer?
{
    Signature.newContext(RSASignatureScheme(), properties: properties)
}

/// The default provider's table (rsa_sig.c), word for word.
private let rsaSettable = paramTable([
    ("digest", OSSL_PARAM_UTF8_STRING), ("properties", OSSL_PARAM_UTF8_STRING),
    ("pad-mode", OSSL_PARAM_UTF8_STRING), ("mgf1-digest", OSSL_PARAM_UTF8_STRING),
    ("mgf1-properties", OSSL_PARAM_UTF8_STRING), ("saltlen", OSSL_PARAM_UTF8_STRING),
])

/// During a digest-sign the digest cannot change, so it is not offered.
private let rsaSettableWithoutDigest = paramTable([
    ("pad-mode", OSSL_PARAM_UTF8_STRING), ("mgf1-digest", OSSL_PARAM_UTF8_STRING),
    ("mgf1-properties", OSSL_PARAM_UTF8_STRING), ("saltlen", OSSL_PARAM_UTF8_STRING),
])

private func rsaSignatureSettableParams(_ pointer: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    object(pointer, as: SignatureContext.self)?.isDigestOperation == true ? rsaSettableWithoutDigest : rsaSettable
}

private let rsaGettable = paramTable([
    ("algorithm-id", OSSL_PARAM_OCTET_STRING), ("pad-mode", OSSL_PARAM_UTF8_STRING),
    ("digest", OSSL_PARAM_UTF8_STRING), ("mgf1-digest", OSSL_PARAM_UTF8_STRING),
    ("saltlen", OSSL_PARAM_UTF8_STRING),
])

private func rsaSignatureGettableParams(_ pointer: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    rsaGettable
}

enum RSASignature {
    static let dispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = Signature.sharedTable
        table.add(SignatureSlot.newContext, rsaSignatureNewContext)
        table.add(SignatureSlot.settableContextParams, rsaSignatureSettableParams)
        table.add(SignatureSlot.gettableContextParams, rsaSignatureGettableParams)
        return table.finished()
    }()
}
