// RSA key management: generation inside the HSMs, loading from the decoder, the
// questions OpenSSL asks about a key, public import and export. Export of the private
// half is refused, which is also what makes OpenSSL send signing and decryption with an
// HSM key to this provider instead of exporting the key elsewhere.

import COpenSSL
import CloudHSMCore

/// The keydata OpenSSL holds for us. `key` is nil between `new` and `import`.
final class KeyHolder {
    var key: ProviderKey?

    init(_ key: ProviderKey?) { self.key = key }
}

/// Parameters collected between gen_init and gen.
final class KeyGenerationContext {
    var bits = 2048
    var publicExponent: UInt64 = 65537
    var primes = 2
}

enum RSAKeyManagement {
    static let selectPrivate = Int32(OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
    static let selectPublic = Int32(OSSL_KEYMGMT_SELECT_PUBLIC_KEY)

    static let new: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { _ in
        retainedPointer(KeyHolder(nil))
    }

    static let free: @convention(c) (UnsafeMutableRawPointer?) -> Void = { keydata in
        releasePointer(keydata, as: KeyHolder.self)
    }

    /// Takes the key object the decoder passed by reference, and its ownership.
    static let load: @convention(c) (UnsafeRawPointer?, Int) -> UnsafeMutableRawPointer? = { reference, size in
        trace("keymgmt load (reference of \(size) bytes)")
        guard let reference, size == MemoryLayout<UnsafeMutableRawPointer?>.size else { return nil }
        let slot = UnsafeMutableRawPointer(mutating: reference).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        let holder = slot.pointee
        slot.pointee = nil
        return holder
    }

    static let has: @convention(c) (UnsafeRawPointer?, Int32) -> Int32 = { keydata, selection in
        let key = object(UnsafeMutableRawPointer(mutating: keydata), as: KeyHolder.self)?.key
        trace("keymgmt has selection=0x\(String(selection, radix: 16)) hsm=\(key?.isHSMKey ?? false)")
        if selection & selectPrivate != 0, key?.isHSMKey != true { return 0 }
        if selection & selectPublic != 0, key == nil { return 0 }
        // RSA has no domain parameters; answering 0 would fail SSL_CTX_use_cert_and_key.
        return 1
    }

    static let match: @convention(c) (UnsafeRawPointer?, UnsafeRawPointer?, Int32) -> Int32 = {
        first, second, selection in
        guard let a = object(UnsafeMutableRawPointer(mutating: first), as: KeyHolder.self)?.key,
            let b = object(UnsafeMutableRawPointer(mutating: second), as: KeyHolder.self)?.key
        else { return 0 }
        if selection & (selectPrivate | selectPublic) != 0 { return a.hasSamePublicKey(as: b) ? 1 : 0 }
        return 1
    }

    static let publicKeyTypes = paramTable([("n", OSSL_PARAM_UNSIGNED_INTEGER), ("e", OSSL_PARAM_UNSIGNED_INTEGER)])

    static let importTypes: @convention(c) (Int32) -> UnsafePointer<OSSL_PARAM>? = { _ in publicKeyTypes }
    static let exportTypes: @convention(c) (Int32) -> UnsafePointer<OSSL_PARAM>? = { _ in publicKeyTypes }

    /// Accepts public keys only. A software private key stays with its own provider, so
    /// nothing here ever holds private key material.
    static let importKey: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<OSSL_PARAM>?) -> Int32 = {
        keydata, selection, params in
        guard let holder = object(keydata, as: KeyHolder.self) else { return 0 }
        let reader = ParamReader(params: params)
        if reader.contains("d") { return 0 }
        guard selection & selectPublic != 0, let n = reader.bigNumber("n"), let e = reader.bigNumber("e") else {
            return 0
        }
        do {
            holder.key = try ProviderKey(modulus: n, publicExponent: e, library: try runtime.library())
            return 1
        } catch {
            return 0
        }
    }

    static let exportKey:
        @convention(c) (UnsafeMutableRawPointer?, Int32, DataCallback?, UnsafeMutableRawPointer?) -> Int32 = {
            keydata, selection, callback, argument in
            guard let key = object(keydata, as: KeyHolder.self)?.key, let callback else { return 0 }
            if selection & selectPrivate != 0, key.isHSMKey { return 0 }
            guard selection & selectPublic != 0 else { return 1 }
            return exportPublicParams(key, callback, argument)
        }

    static let gettable = paramTable([
        ("bits", OSSL_PARAM_INTEGER), ("security-bits", OSSL_PARAM_INTEGER), ("max-size", OSSL_PARAM_INTEGER),
        ("default-digest", OSSL_PARAM_UTF8_STRING), ("n", OSSL_PARAM_UNSIGNED_INTEGER),
        ("e", OSSL_PARAM_UNSIGNED_INTEGER),
    ])

    static let gettableParams: @convention(c) (UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? = { _ in gettable
    }

    static let getParams: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 = {
        keydata, params in
        guard let key = object(keydata, as: KeyHolder.self)?.key else { return 0 }
        let writer = ParamWriter(params: params)
        let ok =
            writer.set("bits", int: key.bits) && writer.set("security-bits", int: key.securityBits)
            && writer.set("max-size", int: key.size) && writer.set("default-digest", staticString: "SHA256")
            && writer.set("n", bigEndian: key.modulus) && writer.set("e", bigEndian: key.publicExponent)
        return ok ? 1 : 0
    }

    static let queryOperationName: @convention(c) (Int32) -> UnsafePointer<CChar>? = { _ in cString("RSA") }

    static let duplicate: @convention(c) (UnsafeRawPointer?, Int32) -> UnsafeMutableRawPointer? = { keydata, _ in
        // Key objects are immutable, so a duplicate can share this one.
        guard let holder = object(UnsafeMutableRawPointer(mutating: keydata), as: KeyHolder.self) else { return nil }
        return retainedPointer(KeyHolder(holder.key))
    }

    // MARK: Generation

    static let generationSettable = paramTable([
        ("bits", OSSL_PARAM_UNSIGNED_INTEGER), ("primes", OSSL_PARAM_UNSIGNED_INTEGER),
        ("e", OSSL_PARAM_UNSIGNED_INTEGER),
    ])

    static let generationInit:
        @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<OSSL_PARAM>?) -> UnsafeMutableRawPointer? = {
            _, _, params in
            let context = KeyGenerationContext()
            guard apply(params, to: context) else { return nil }
            return retainedPointer(context)
        }

    static let generationSetParams: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<OSSL_PARAM>?) -> Int32 = {
        context, params in
        guard let context = object(context, as: KeyGenerationContext.self) else { return 0 }
        return apply(params, to: context) ? 1 : 0
    }

    static let generationSettableParams:
        @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? = { _, _ in
            generationSettable
        }

    static let generate:
        @convention(c) (UnsafeMutableRawPointer?, DataCallback?, UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? =
            {
                context, _, _ in
                guard let context = object(context, as: KeyGenerationContext.self) else { return nil }
                do {
                    guard [2048, 3072, 4096].contains(context.bits) else {
                        throw ProviderError(
                            .unsupported, "the HSMs make RSA keys of 2048, 3072 or 4096 bits, not \(context.bits)")
                    }
                    guard context.primes == 2 else {
                        throw ProviderError(.unsupported, "the HSMs make two-prime RSA keys only")
                    }
                    let reference = try runtime.keys.generateKeyPair(
                        bits: context.bits, publicExponent: context.publicExponent, label: "openssl-genrsa")
                    let key = try ProviderKey(reference: reference, library: try runtime.library())
                    return retainedPointer(KeyHolder(key))
                } catch let error as ProviderError {
                    raise(error)
                    return nil
                } catch {
                    raise(ProviderError(.hsmOperationFailed, "\(error)"))
                    return nil
                }
            }

    static let generationCleanup: @convention(c) (UnsafeMutableRawPointer?) -> Void = { context in
        releasePointer(context, as: KeyGenerationContext.self)
    }

    private static func apply(_ params: UnsafePointer<OSSL_PARAM>?, to context: KeyGenerationContext) -> Bool {
        let reader = ParamReader(params: params)
        if reader.contains("bits") {
            guard let bits = reader.uint("bits") else { return false }
            context.bits = Int(bits)
        }
        if reader.contains("primes") {
            guard let primes = reader.uint("primes") else { return false }
            context.primes = Int(primes)
        }
        if reader.contains("e") {
            // Refused here, with the range, rather than as a failed key generation later.
            guard let e = reader.bigNumber("e") else { return false }
            let digits = e.drop(while: { $0 == 0 })
            let exponent = digits.count <= 8 ? digits.reduce(0) { $0 << 8 | UInt64($1) } : nil
            guard let exponent, RSAPublicExponent.isAllowed(exponent) else {
                let shown = exponent.map { "\($0)" } ?? "a number of \(digits.count) bytes"
                raise(
                    ProviderError(
                        .unsupported,
                        "the HSMs make RSA keys with a public exponent that is \(RSAPublicExponent.allowedDescription), "
                            + "not \(shown)"))
                return false
            }
            context.publicExponent = exponent
        }
        return true
    }

    static let dispatch = dispatchTable([
        DispatchEntry(OSSL_FUNC_KEYMGMT_NEW, unsafeBitCast(new, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_FREE, unsafeBitCast(free, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_LOAD, unsafeBitCast(load, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_HAS, unsafeBitCast(has, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_MATCH, unsafeBitCast(match, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_IMPORT, unsafeBitCast(importKey, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, unsafeBitCast(importTypes, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_EXPORT, unsafeBitCast(exportKey, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, unsafeBitCast(exportTypes, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_GET_PARAMS, unsafeBitCast(getParams, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, unsafeBitCast(gettableParams, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, unsafeBitCast(queryOperationName, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_DUP, unsafeBitCast(duplicate, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_GEN_INIT, unsafeBitCast(generationInit, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, unsafeBitCast(generationSetParams, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, unsafeBitCast(generationSettableParams, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_GEN, unsafeBitCast(generate, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_KEYMGMT_GEN_CLEANUP, unsafeBitCast(generationCleanup, to: GenericFunction.self)),
    ])
}

/// Hands n and e to an export callback as BIGNUM parameters.
func exportPublicParams(_ key: ProviderKey, _ callback: DataCallback, _ argument: UnsafeMutableRawPointer?) -> Int32 {
    guard let builder = OSSL_PARAM_BLD_new() else { return 0 }
    defer { OSSL_PARAM_BLD_free(builder) }
    guard let n = BN_bin2bn(key.modulus, Int32(key.modulus.count), nil) else { return 0 }
    defer { BN_free(n) }
    guard let e = BN_bin2bn(key.publicExponent, Int32(key.publicExponent.count), nil) else { return 0 }
    defer { BN_free(e) }
    guard OSSL_PARAM_BLD_push_BN(builder, cString("n"), n) == 1, OSSL_PARAM_BLD_push_BN(builder, cString("e"), e) == 1,
        let params = OSSL_PARAM_BLD_to_param(builder)
    else { return 0 }
    defer { OSSL_PARAM_free(params) }
    return callback(params, argument)
}
