// RSA signatures. Signing hashes locally and sends only the digest to the HSM: one round
// trip per signature, nothing on the network in any init (libssl calls
// digest_sign_init as a probe for every candidate algorithm of every handshake).
// Verification runs locally on a shadow operation of the default provider in our
// private library context, so public-key results are exactly OpenSSL's own.

import COpenSSL
import CloudHSMCore

final class SignatureContext {
    enum Mode { case none, sign, verify }

    var key: ProviderKey?
    var mode = Mode.none
    var padding = RSA_PKCS1_PADDING
    var digest: DigestAlgorithm?
    var mgf1Digest: DigestAlgorithm?
    /// An explicit length, or OpenSSL's RSA_PSS_SALTLEN_DIGEST (-1), _AUTO (-2), _MAX (-3).
    var saltLength = Int(RSA_PSS_SALTLEN_AUTO)
    /// The running hash of a digest-sign operation, made on the first update.
    var hash: OpaquePointer?
    /// The default provider's verify operation this context forwards to.
    var shadow: OpaquePointer?
    /// For digest-verify: the message digest context that owns `shadow`.
    var shadowDigest: OpaquePointer?

    init() {}

    deinit { reset() }

    func reset() {
        if let hash { EVP_MD_CTX_free(hash) }
        if let shadowDigest { EVP_MD_CTX_free(shadowDigest) } else if let shadow { EVP_PKEY_CTX_free(shadow) }
        hash = nil
        shadow = nil
        shadowDigest = nil
    }

    func copy() -> SignatureContext? {
        let twin = SignatureContext()
        twin.key = key
        twin.mode = mode
        twin.padding = padding
        twin.digest = digest
        twin.mgf1Digest = mgf1Digest
        twin.saltLength = saltLength
        if let hash {
            guard let copy = EVP_MD_CTX_new() else { return nil }
            twin.hash = copy
            guard EVP_MD_CTX_copy_ex(copy, hash) == 1 else { return nil }
        }
        if let shadowDigest {
            guard let copy = EVP_MD_CTX_new() else { return nil }
            twin.shadowDigest = copy
            guard EVP_MD_CTX_copy_ex(copy, shadowDigest) == 1 else { return nil }
            twin.shadow = EVP_MD_CTX_get_pkey_ctx(copy)
        } else if let shadow {
            guard let copy = EVP_PKEY_CTX_dup(shadow) else { return nil }
            twin.shadow = copy
        }
        return twin
    }

    /// What the HSM is asked to do with `input`.
    func mechanism(input: [UInt8], key: ProviderKey) throws -> SignMechanism {
        let length = input.count
        switch padding {
        case RSA_PKCS1_PADDING:
            guard let digest else { return .pkcs1(digest: .none) }
            guard length == digest.outputLength else {
                throw ProviderError(.invalidInput, "input is \(length) bytes, not a \(digest) digest")
            }
            return .pkcs1(digest: digest)
        case RSA_PKCS1_PSS_PADDING:
            let digest = self.digest ?? .sha1
            guard length == digest.outputLength else {
                throw ProviderError(.invalidInput, "input is \(length) bytes, not a \(digest) digest")
            }
            return .pss(
                digest: digest, mgf1Digest: mgf1Digest ?? digest,
                saltLength: UInt32(try effectiveSaltLength(for: digest, key: key)))
        case RSA_NO_PADDING:
            if let problem = RawRSABlock.problem(input, modulus: key.modulus) {
                throw ProviderError(.invalidInput, problem)
            }
            return .raw
        default:
            throw ProviderError(.unsupported, "RSA padding mode \(padding) is not supported for signing")
        }
    }

    /// The salt length a PSS signature uses: "digest" is the digest length; "auto" and
    /// "max" are the most the modulus allows (what OpenSSL 3.0 does when signing).
    func effectiveSaltLength(for digest: DigestAlgorithm, key: ProviderKey) throws -> Int {
        let encodedLength = (key.bits - 1 + 7) / 8
        let maximum = encodedLength - digest.outputLength - 2
        let length: Int
        switch saltLength {
        case Int(RSA_PSS_SALTLEN_DIGEST): length = digest.outputLength
        case Int(RSA_PSS_SALTLEN_AUTO), Int(RSA_PSS_SALTLEN_MAX): length = maximum
        default: length = saltLength
        }
        guard length >= 0, length <= maximum else {
            throw ProviderError(.invalidInput, "PSS salt length \(length) does not fit a \(key.bits)-bit key")
        }
        return length
    }

    /// Applies settings from OpenSSL (libssl, -sigopt, -pkeyopt); false on a bad value.
    func apply(_ params: UnsafePointer<OSSL_PARAM>?) -> Bool {
        guard let params else { return true }
        let reader = ParamReader(params: params)
        do {
            if let mode = try PaddingModes.signature.read(reader) { padding = mode }
            if let algorithm = try reader.digest("digest") { digest = algorithm }
            if let algorithm = try reader.digest("mgf1-digest") { mgf1Digest = algorithm }
        } catch {
            return false
        }
        if reader.contains("saltlen") {
            if reader.dataType("saltlen") == UInt32(OSSL_PARAM_UTF8_STRING) {
                switch reader.string("saltlen") {
                case "digest": saltLength = Int(RSA_PSS_SALTLEN_DIGEST)
                case "max": saltLength = Int(RSA_PSS_SALTLEN_MAX)
                case "auto": saltLength = Int(RSA_PSS_SALTLEN_AUTO)
                case let text?:
                    guard let value = Int(text), value >= 0 else { return false }
                    saltLength = value
                case nil: return false
                }
            } else {
                guard let value = reader.int("saltlen"), value >= Int(RSA_PSS_SALTLEN_MAX) else { return false }
                saltLength = value
            }
        }
        return forward(params, to: shadow)
    }

    /// Settings as OpenSSL parameters, for a shadow operation or the algorithm id.
    func settingsParams(key: ProviderKey) throws -> [ParamValue] {
        var values: [ParamValue] = [.int("pad-mode", Int(padding))]
        let digest = self.digest ?? (padding == RSA_PKCS1_PSS_PADDING ? .sha1 : nil)
        if let name = digest?.openSSLName { values.append(.string("digest", name)) }
        if padding == RSA_PKCS1_PSS_PADDING, let digest {
            values.append(.string("mgf1-digest", (mgf1Digest ?? digest).openSSLName ?? "SHA1"))
            values.append(.int("saltlen", try effectiveSaltLength(for: digest, key: key)))
        }
        return values
    }
}

enum RSASignature {
    static let newContext:
        @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?) -> UnsafeMutableRawPointer? =
            { _, _ in retainedPointer(SignatureContext()) }

    static let freeContext: @convention(c) (UnsafeMutableRawPointer?) -> Void = { context in
        releasePointer(context, as: SignatureContext.self)
    }

    /// Mandatory in 3.0: EVP_DigestSignFinal duplicates the context before finishing.
    static let duplicateContext: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { context in
        guard let twin = object(context, as: SignatureContext.self)?.copy() else { return nil }
        return retainedPointer(twin)
    }

    private static func begin(
        _ context: UnsafeMutableRawPointer?, _ keydata: UnsafeMutableRawPointer?, _ mode: SignatureContext.Mode
    ) -> SignatureContext? {
        guard let context = object(context, as: SignatureContext.self),
            let key = object(keydata, as: KeyHolder.self)?.key ?? context.key
        else { return nil }
        context.reset()
        context.key = key
        context.mode = mode
        return context
    }

    static let signInit:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?)
            -> Int32 = { context, keydata, params in
                guard let context = begin(context, keydata, .sign) else { return 0 }
                guard context.key?.isHSMKey == true else {
                    raise(ProviderError(.unsupported, "signing needs an HSM key; this RSA key is public only"))
                    return 0
                }
                return context.apply(params) ? 1 : 0
            }

    /// Signs pre-hashed input (EVP_PKEY_sign, pkeyutl -sign).
    static let sign:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int,
            UnsafePointer<UInt8>?, Int
        ) -> Int32 = { context, signature, signatureLength, capacity, input, inputLength in
            guard let context = object(context, as: SignatureContext.self), let key = context.key else { return 0 }
            let bytes = input.map { Array(UnsafeBufferPointer(start: $0, count: inputLength)) } ?? []
            return finishSigning(context, key: key, input: bytes, signature, signatureLength, capacity)
        }

    static let verifyInit:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32 = {
            context, keydata, params in
            guard let context = begin(context, keydata, .verify), let key = context.key,
                let library = try? runtime.library()
            else { return 0 }
            ERR_set_mark()
            defer { ERR_pop_to_mark() }
            guard let shadow = EVP_PKEY_CTX_new_from_pkey(library, key.publicKey, nil) else { return 0 }
            context.shadow = shadow
            guard EVP_PKEY_verify_init(shadow) == 1 else { return 0 }
            return context.apply(params) ? 1 : 0
        }

    static let verify:
        @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int, UnsafePointer<UInt8>?, Int) -> Int32 = {
            context, signature, signatureLength, input, inputLength in
            guard let shadow = object(context, as: SignatureContext.self)?.shadow else { return 0 }
            ERR_set_mark()
            defer { ERR_pop_to_mark() }
            return EVP_PKEY_verify(shadow, signature, signatureLength, input, inputLength) == 1 ? 1 : 0
        }

    static let digestSignInit:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?
        ) -> Int32 = { context, digestName, keydata, params in
            guard let context = begin(context, keydata, .sign) else { return 0 }
            guard context.key?.isHSMKey == true else { return 0 }
            if let digestName, digestName.pointee != 0 {
                guard let algorithm = DigestAlgorithm(name: String(cString: digestName)) else {
                    raise(ProviderError(.unsupported, "digest \(String(cString: digestName)) is not supported"))
                    return 0
                }
                context.digest = algorithm
            } else {
                context.digest = .sha256
            }
            return context.apply(params) ? 1 : 0
        }

    static let digestSignUpdate: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Int32 = {
        context, data, length in
        guard let context = object(context, as: SignatureContext.self) else { return 0 }
        if context.hash == nil {
            guard let algorithm = context.digest, let digest = try? runtime.digest(algorithm),
                let hash = EVP_MD_CTX_new()
            else { return 0 }
            context.hash = hash
            guard EVP_DigestInit_ex2(hash, digest, nil) == 1 else { return 0 }
        }
        return EVP_DigestUpdate(context.hash, data, length)
    }

    static let digestSignFinal:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int) ->
            Int32 =
            { context, signature, signatureLength, capacity in
                guard let context = object(context, as: SignatureContext.self), let key = context.key else {
                    return 0
                }
                if signature == nil {
                    signatureLength?.pointee = key.size
                    return 1
                }
                if context.hash == nil, digestSignUpdate(Unmanaged.passUnretained(context).toOpaque(), nil, 0) != 1 {
                    return 0
                }
                // Finish a copy, so the context could take more data or finish again.
                guard let copy = EVP_MD_CTX_new() else { return 0 }
                defer { EVP_MD_CTX_free(copy) }
                var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
                var length: UInt32 = 0
                guard EVP_MD_CTX_copy_ex(copy, context.hash) == 1, EVP_DigestFinal_ex(copy, &digest, &length) == 1
                else { return 0 }
                return finishSigning(
                    context, key: key, input: Array(digest.prefix(Int(length))), signature, signatureLength, capacity)
            }

    /// One-shot EVP_DigestSign, which libssl uses for every handshake signature: one hash
    /// of the message and one HSM round trip, without the context duplication that
    /// update-then-final costs.
    static let digestSign:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int,
            UnsafePointer<UInt8>?, Int
        ) -> Int32 = { context, signature, signatureLength, capacity, message, messageLength in
            guard let context = object(context, as: SignatureContext.self), let key = context.key else { return 0 }
            if signature == nil {
                signatureLength?.pointee = key.size
                return 1
            }
            guard let algorithm = context.digest, let digest = try? runtime.digest(algorithm) else { return 0 }
            var hash = [UInt8](repeating: 0, count: algorithm.outputLength)
            var length: UInt32 = 0
            guard EVP_Digest(message, messageLength, &hash, &length, digest, nil) == 1, Int(length) == hash.count else {
                return 0
            }
            return finishSigning(context, key: key, input: hash, signature, signatureLength, capacity)
        }

    private static func finishSigning(
        _ context: SignatureContext, key: ProviderKey, input: [UInt8], _ signature: UnsafeMutablePointer<UInt8>?,
        _ signatureLength: UnsafeMutablePointer<Int>?, _ capacity: Int
    ) -> Int32 {
        guard let signature else {
            signatureLength?.pointee = key.size
            return 1
        }
        do {
            guard capacity >= key.size else {
                throw ProviderError(.invalidInput, "signature buffer of \(capacity) bytes is smaller than \(key.size)")
            }
            let mechanism = try context.mechanism(input: input, key: key)
            trace("sign: key handle \(key.reference?.handle ?? 0), \(mechanism), \(input.count) bytes")
            let result = try runtime.keys.sign(key, mechanism: mechanism, input: input)
            guard result.count <= capacity else {
                throw ProviderError(.hsmOperationFailed, "the HSM returned a \(result.count)-byte signature")
            }
            signature.update(from: result, count: result.count)
            signatureLength?.pointee = result.count
            return 1
        } catch let error as ProviderError {
            trace("sign failed: \(error)")
            raise(error)
            return 0
        } catch {
            raise(ProviderError(.hsmOperationFailed, "\(error)"))
            return 0
        }
    }

    static let digestVerifyInit:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?
        ) -> Int32 = { context, digestName, keydata, params in
            guard let context = begin(context, keydata, .verify), let key = context.key,
                let library = try? runtime.library(), let digestContext = EVP_MD_CTX_new()
            else { return 0 }
            context.shadowDigest = digestContext
            ERR_set_mark()
            defer { ERR_pop_to_mark() }
            var shadow: OpaquePointer?
            let name = digestName.flatMap { $0.pointee == 0 ? nil : String(cString: $0) } ?? "SHA256"
            guard EVP_DigestVerifyInit_ex(digestContext, &shadow, name, library, nil, key.publicKey, nil) == 1 else {
                return 0
            }
            context.shadow = shadow
            context.digest = DigestAlgorithm(name: name)
            return context.apply(params) ? 1 : 0
        }

    static let digestVerifyUpdate: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Int32 = {
        context, data, length in
        guard let digestContext = object(context, as: SignatureContext.self)?.shadowDigest else { return 0 }
        return EVP_DigestVerifyUpdate(digestContext, data, length)
    }

    static let digestVerifyFinal: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Int32 = {
        context, signature, length in
        guard let digestContext = object(context, as: SignatureContext.self)?.shadowDigest else { return 0 }
        ERR_set_mark()
        defer { ERR_pop_to_mark() }
        return EVP_DigestVerifyFinal(digestContext, signature, length) == 1 ? 1 : 0
    }

    static let gettable = paramTable([
        ("algorithm-id", OSSL_PARAM_OCTET_STRING), ("pad-mode", OSSL_PARAM_UTF8_STRING),
        ("digest", OSSL_PARAM_UTF8_STRING), ("mgf1-digest", OSSL_PARAM_UTF8_STRING),
        ("saltlen", OSSL_PARAM_UTF8_STRING),
    ])

    static let settable = paramTable([
        ("digest", OSSL_PARAM_UTF8_STRING), ("properties", OSSL_PARAM_UTF8_STRING),
        ("pad-mode", OSSL_PARAM_UTF8_STRING), ("mgf1-digest", OSSL_PARAM_UTF8_STRING),
        ("mgf1-properties", OSSL_PARAM_UTF8_STRING), ("saltlen", OSSL_PARAM_UTF8_STRING),
    ])

    static let gettableContextParams:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? = { _, _ in
            gettable
        }

    static let settableContextParams:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? = { _, _ in
            settable
        }

    static let setContextParams: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32 = {
        context, params in
        guard let context = object(context, as: SignatureContext.self) else { return 0 }
        return context.apply(params) ? 1 : 0
    }

    static let getContextParams: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 =
        {
            context, params in
            guard let context = object(context, as: SignatureContext.self) else { return 0 }
            let writer = ParamWriter(params: params)
            guard PaddingModes.signature.write(writer, context.padding) else { return 0 }
            if let name = context.digest?.openSSLName, !writer.set("digest", string: name) { return 0 }
            if let name = (context.mgf1Digest ?? context.digest)?.openSSLName, !writer.set("mgf1-digest", string: name)
            {
                return 0
            }
            if let slot = writer.locate("saltlen") {
                if slot.pointee.data_type == UInt32(OSSL_PARAM_INTEGER) {
                    guard writer.set("saltlen", int: context.saltLength) else { return 0 }
                } else {
                    let text: String
                    switch context.saltLength {
                    case Int(RSA_PSS_SALTLEN_DIGEST): text = "digest"
                    case Int(RSA_PSS_SALTLEN_MAX): text = "max"
                    case Int(RSA_PSS_SALTLEN_AUTO): text = "auto"
                    default: text = String(context.saltLength)
                    }
                    guard writer.set("saltlen", string: text) else { return 0 }
                }
            }
            if writer.isRequested("algorithm-id") {
                guard let key = context.key, let identifier = algorithmIdentifier(context, key: key) else { return 0 }
                guard writer.set("algorithm-id", octets: identifier) else { return 0 }
            }
            return 1
        }

    /// The DER AlgorithmIdentifier for the current settings, as the default provider
    /// builds it for the same settings (X509_sign and X509_REQ_sign embed it).
    private static func algorithmIdentifier(_ context: SignatureContext, key: ProviderKey) -> [UInt8]? {
        guard let library = try? runtime.library(), let settings = try? context.settingsParams(key: key) else {
            return nil
        }
        ERR_set_mark()
        defer { ERR_pop_to_mark() }
        guard let shadow = EVP_PKEY_CTX_new_from_pkey(library, key.publicKey, nil) else { return nil }
        defer { EVP_PKEY_CTX_free(shadow) }
        guard EVP_PKEY_verify_init(shadow) == 1 else { return nil }
        let configured = withParams(settings) { EVP_PKEY_CTX_set_params(shadow, $0) == 1 }
        guard configured else { return nil }
        var buffer = [UInt8](repeating: 0, count: 256)
        return buffer.withUnsafeMutableBytes { raw -> [UInt8]? in
            var params = [
                OSSL_PARAM_construct_octet_string(cString("algorithm-id"), raw.baseAddress, raw.count),
                OSSL_PARAM_construct_end(),
            ]
            guard EVP_PKEY_CTX_get_params(shadow, &params) == 1 else { return nil }
            let length = params[0].return_size
            guard length > 0, length <= raw.count else { return nil }
            return Array(raw.prefix(length))
        }
    }

    static let dispatch = dispatchTable([
        DispatchEntry(OSSL_FUNC_SIGNATURE_NEWCTX, unsafeBitCast(newContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_FREECTX, unsafeBitCast(freeContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_DUPCTX, unsafeBitCast(duplicateContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_SIGN_INIT, unsafeBitCast(signInit, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_SIGN, unsafeBitCast(sign, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_VERIFY_INIT, unsafeBitCast(verifyInit, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_VERIFY, unsafeBitCast(verify, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, unsafeBitCast(digestSignInit, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, unsafeBitCast(digestSignUpdate, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, unsafeBitCast(digestSignFinal, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, unsafeBitCast(digestSign, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, unsafeBitCast(digestVerifyInit, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, unsafeBitCast(digestVerifyUpdate, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, unsafeBitCast(digestVerifyFinal, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, unsafeBitCast(getContextParams, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, unsafeBitCast(gettableContextParams, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, unsafeBitCast(setContextParams, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, unsafeBitCast(settableContextParams, to: GenericFunction.self)),
    ])
}
