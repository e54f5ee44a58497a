// RSA encryption and decryption. Decryption runs on the HSM, including TLS 1.2's RSA key
// exchange (RSA_PKCS1_WITH_TLS_PADDING), where the padding check happens here in
// constant time on the raw result and a bad premaster secret becomes 48 random bytes,
// as TLS requires, never an error. Encryption is a public-key operation, done locally on
// a shadow default-provider operation.

import COpenSSL
import CloudHSMCore

final class CipherContext {
    var key: ProviderKey?
    var padding = RSA_PKCS1_PADDING
    var oaepDigest: DigestAlgorithm?
    var mgf1Digest: DigestAlgorithm?
    var oaepLabel: [UInt8] = []
    var clientVersion: UInt = 0
    var negotiatedVersion: UInt = 0
    /// The default provider's encrypt operation, for encryption.
    var shadow: OpaquePointer?

    deinit { if let shadow { EVP_PKEY_CTX_free(shadow) } }

    func copy() -> CipherContext? {
        let twin = CipherContext()
        twin.key = key
        twin.padding = padding
        twin.oaepDigest = oaepDigest
        twin.mgf1Digest = mgf1Digest
        twin.oaepLabel = oaepLabel
        twin.clientVersion = clientVersion
        twin.negotiatedVersion = negotiatedVersion
        if let shadow {
            guard let copy = EVP_PKEY_CTX_dup(shadow) else { return nil }
            twin.shadow = copy
        }
        return twin
    }

    func apply(_ params: UnsafePointer<OSSL_PARAM>?) -> Bool {
        guard let params else { return true }
        let reader = ParamReader(params: params)
        do {
            if let mode = try PaddingModes.cipher.read(reader, alsoAccepting: PaddingModes.cipherIntegerOnly) {
                padding = mode
            }
            if let algorithm = try reader.digest("digest") { oaepDigest = algorithm }
            if let algorithm = try reader.digest("mgf1-digest") { mgf1Digest = algorithm }
        } catch {
            return false
        }
        if reader.contains("oaep-label") {
            guard let label = reader.octets("oaep-label") else { return false }
            oaepLabel = label
        }
        if reader.contains("tls-client-version") {
            guard let version = reader.uint("tls-client-version") else { return false }
            clientVersion = version
        }
        if reader.contains("tls-negotiated-version") {
            guard let version = reader.uint("tls-negotiated-version") else { return false }
            negotiatedVersion = version
        }
        return forward(params, to: shadow)
    }
}

enum RSAAsymmetricCipher {
    static let premasterLength = 48

    static let newContext: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { _ in
        retainedPointer(CipherContext())
    }

    static let freeContext: @convention(c) (UnsafeMutableRawPointer?) -> Void = { context in
        releasePointer(context, as: CipherContext.self)
    }

    static let duplicateContext: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { context in
        guard let twin = object(context, as: CipherContext.self)?.copy() else { return nil }
        return retainedPointer(twin)
    }

    static let encryptInit:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32 = {
            context, keydata, params in
            guard let context = object(context, as: CipherContext.self),
                let key = object(keydata, as: KeyHolder.self)?.key, let library = try? runtime.library()
            else { return 0 }
            context.key = key
            if let old = context.shadow { EVP_PKEY_CTX_free(old) }
            ERR_set_mark()
            defer { ERR_pop_to_mark() }
            context.shadow = EVP_PKEY_CTX_new_from_pkey(library, key.publicKey, nil)
            guard let shadow = context.shadow, EVP_PKEY_encrypt_init(shadow) == 1 else { return 0 }
            return context.apply(params) ? 1 : 0
        }

    static let encrypt:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int,
            UnsafePointer<UInt8>?, Int
        ) -> Int32 = { context, output, outputLength, capacity, input, inputLength in
            guard let shadow = object(context, as: CipherContext.self)?.shadow, let outputLength else { return 0 }
            if output != nil { outputLength.pointee = capacity }
            return EVP_PKEY_encrypt(shadow, output, outputLength, input, inputLength) == 1 ? 1 : 0
        }

    static let decryptInit:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32 = {
            context, keydata, params in
            guard let context = object(context, as: CipherContext.self),
                let key = object(keydata, as: KeyHolder.self)?.key
            else { return 0 }
            guard key.isHSMKey else {
                raise(ProviderError(.unsupported, "decryption needs an HSM key; this RSA key is public only"))
                return 0
            }
            context.key = key
            return context.apply(params) ? 1 : 0
        }

    static let decrypt:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>?, Int,
            UnsafePointer<UInt8>?, Int
        ) -> Int32 = { context, output, outputLength, capacity, input, inputLength in
            guard let context = object(context, as: CipherContext.self), let key = context.key else { return 0 }
            let isTLS = context.padding == RSA_PKCS1_WITH_TLS_PADDING
            guard let output else {
                outputLength?.pointee = isTLS ? premasterLength : key.size
                return 1
            }
            let ciphertext = input.map { Array(UnsafeBufferPointer(start: $0, count: inputLength)) } ?? []
            trace(
                "decrypt: key handle \(key.reference?.handle ?? 0), padding mode \(context.padding), \(inputLength) bytes"
            )
            do {
                let plaintext: [UInt8]
                if isTLS {
                    plaintext = try tlsPremasterSecret(context, key: key, ciphertext: ciphertext)
                } else {
                    let mechanism: DecryptMechanism
                    switch context.padding {
                    case RSA_PKCS1_PADDING: mechanism = .pkcs1
                    case RSA_NO_PADDING: mechanism = .raw
                    default:
                        let digest = context.oaepDigest ?? .sha1
                        mechanism = .oaep(
                            digest: digest, mgf1Digest: context.mgf1Digest ?? digest, label: context.oaepLabel)
                    }
                    plaintext = try runtime.keys.decrypt(key, mechanism: mechanism, input: ciphertext)
                }
                guard plaintext.count <= capacity else {
                    throw ProviderError(.invalidInput, "output buffer of \(capacity) bytes is too small")
                }
                output.update(from: plaintext, count: plaintext.count)
                outputLength?.pointee = plaintext.count
                return 1
            } catch let error as ProviderError {
                trace("decrypt failed: \(error)")
                raise(error)
                return 0
            } catch {
                raise(ProviderError(.hsmOperationFailed, "\(error)"))
                return 0
            }
        }

    /// The TLS 1.2 RSA key exchange: a raw private operation on the HSM, then the PKCS#1
    /// type 2 and version checks in constant time; any failure yields random bytes.
    static func tlsPremasterSecret(_ context: CipherContext, key: ProviderKey, ciphertext: [UInt8]) throws -> [UInt8] {
        guard context.clientVersion > 0 else {
            throw ProviderError(.invalidInput, "TLS padding needs the client version (tls-client-version)")
        }
        var random = [UInt8](repeating: 0, count: premasterLength)
        guard RAND_bytes_ex(try runtime.library(), &random, premasterLength, 0) == 1 else {
            throw ProviderError(.hsmOperationFailed, "no random bytes for the TLS premaster secret")
        }
        guard ciphertext.count == key.size else {
            return random
        }
        let block = try runtime.keys.decrypt(key, mechanism: .raw, input: ciphertext)
        guard block.count == key.size else {
            throw ProviderError(.hsmOperationFailed, "the HSM returned \(block.count) bytes for a \(key.size)-byte key")
        }
        return TLSPremaster.select(
            block: block, random: random, clientVersion: context.clientVersion,
            negotiatedVersion: context.negotiatedVersion)
    }

    static let gettable = paramTable([
        ("pad-mode", OSSL_PARAM_UTF8_STRING), ("digest", OSSL_PARAM_UTF8_STRING),
        ("mgf1-digest", OSSL_PARAM_UTF8_STRING), ("oaep-label", OSSL_PARAM_OCTET_PTR),
        ("tls-client-version", OSSL_PARAM_UNSIGNED_INTEGER), ("tls-negotiated-version", OSSL_PARAM_UNSIGNED_INTEGER),
    ])

    static let settable = paramTable([
        ("pad-mode", OSSL_PARAM_UTF8_STRING), ("digest", OSSL_PARAM_UTF8_STRING),
        ("digest-props", OSSL_PARAM_UTF8_STRING), ("mgf1-digest", OSSL_PARAM_UTF8_STRING),
        ("mgf1-properties", OSSL_PARAM_UTF8_STRING), ("oaep-label", OSSL_PARAM_OCTET_STRING),
        ("tls-client-version", OSSL_PARAM_UNSIGNED_INTEGER), ("tls-negotiated-version", OSSL_PARAM_UNSIGNED_INTEGER),
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
        guard let context = object(context, as: CipherContext.self) else { return 0 }
        return context.apply(params) ? 1 : 0
    }

    static let getContextParams: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 =
        {
            context, params in
            guard let context = object(context, as: CipherContext.self) else { return 0 }
            let writer = ParamWriter(params: params)
            guard PaddingModes.cipher.write(writer, context.padding) else { return 0 }
            let digest = context.oaepDigest ?? .sha1
            guard writer.set("digest", string: digest.openSSLName ?? "SHA1"),
                writer.set("mgf1-digest", string: (context.mgf1Digest ?? digest).openSSLName ?? "SHA1"),
                writer.set("tls-client-version", uint: context.clientVersion),
                writer.set("tls-negotiated-version", uint: context.negotiatedVersion)
            else { return 0 }
            return 1
        }

    static let dispatch = dispatchTable([
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_NEWCTX, unsafeBitCast(newContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_FREECTX, unsafeBitCast(freeContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_DUPCTX, unsafeBitCast(duplicateContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, unsafeBitCast(encryptInit, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_ENCRYPT, unsafeBitCast(encrypt, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, unsafeBitCast(decryptInit, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_DECRYPT, unsafeBitCast(decrypt, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, unsafeBitCast(getContextParams, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, unsafeBitCast(gettableContextParams, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, unsafeBitCast(setContextParams, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, unsafeBitCast(settableContextParams, to: GenericFunction.self)),
    ])
}

/// The constant-time premaster selection of RFC 5246 section 7.4.7.1.
enum TLSPremaster {
    /// 0xff when `x` is zero, else 0, without a branch on `x`.
    @inline(__always) static func isZero(_ x: UInt8) -> UInt8 {
        UInt8(truncatingIfNeeded: (UInt32(x) &- 1) >> 8)
    }

    @inline(__always) static func equal(_ a: UInt8, _ b: UInt8) -> UInt8 { isZero(a ^ b) }

    /// `block` is the raw RSA result, as long as the modulus. Returns its 48-byte message
    /// when the padding is `00 02 PS 00 M` with |M| = 48 and M starts with the client's
    /// version (or, for old clients with the rollback bug, the negotiated one); else `random`.
    static func select(block: [UInt8], random: [UInt8], clientVersion: UInt, negotiatedVersion: UInt) -> [UInt8] {
        let k = block.count
        let length = RSAAsymmetricCipher.premasterLength
        precondition(k >= length + 11 && random.count == length)
        var good = isZero(block[0]) & equal(block[1], 2) & isZero(block[k - length - 1])
        for index in 2..<(k - length - 1) { good &= ~isZero(block[index]) }
        let major = block[k - length]
        let minor = block[k - length + 1]
        var versionGood =
            equal(major, UInt8(truncatingIfNeeded: clientVersion >> 8))
            & equal(minor, UInt8(truncatingIfNeeded: clientVersion))
        if negotiatedVersion > 0 {
            let alternative =
                equal(major, UInt8(truncatingIfNeeded: negotiatedVersion >> 8))
                & equal(minor, UInt8(truncatingIfNeeded: negotiatedVersion))
            versionGood |= alternative
        }
        good &= versionGood
        var result = [UInt8](repeating: 0, count: length)
        for index in 0..<length {
            result[index] = (block[k - length + index] & good) | (random[index] & ~good)
        }
        return result
    }
}
