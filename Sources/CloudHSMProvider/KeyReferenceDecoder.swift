// Decoders for the fake PEM: one takes our PEM block to DER (and only ours), the next
// takes that DER to a key object. Both applications' ways of loading a key end here:
// PEM_read_bio_PrivateKey / SSL_CTX_use_PrivateKey_file and the apps' file: store.
// Input that is not ours passes through untouched: return 1, call nothing, leave the
// error queue as it was.

import COpenSSL
import CloudHSMCore

enum KeyReferenceDecoder {
    static let structureName: StaticString = "CloudHSMKeyReference"

    static let newContext: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { _ in
        UnsafeMutableRawPointer(mutating: cString(structureName))
    }

    static let freeContext: @convention(c) (UnsafeMutableRawPointer?) -> Void = { _ in }

    typealias DecodeFunction =
        @convention(c) (
            UnsafeMutableRawPointer?, OpaquePointer?, Int32, DataCallback?, UnsafeMutableRawPointer?,
            UnsafeMutableRawPointer?, UnsafeMutableRawPointer?
        ) -> Int32

    /// Our PEM block to DER, for the next decoder. No structure name on the output: the
    /// file: store's chain passes on only unstructured DER (and the default provider's
    /// PEM decoder ignores labels it does not know, such as ours).
    static let decodePEM: DecodeFunction = { _, input, _, callback, argument, _, _ in
        guard let callback, let bytes = core.readAll(input) else { return 1 }
        let text = String(decoding: bytes, as: UTF8.self)
        guard KeyReference.isPresent(in: text) else { return 1 }
        let der: [UInt8]
        do {
            der = try KeyReference(pem: text).derEncoded()
        } catch {
            raise(ProviderError(.malformedKeyReference, "\(error)"))
            return 0
        }
        var objectType = Int32(OSSL_OBJECT_PKEY)
        return der.withUnsafeBytes { raw in
            var params = [
                OSSL_PARAM_construct_int(cString("type"), &objectType),
                OSSL_PARAM_construct_utf8_string(
                    cString("data-type"), UnsafeMutablePointer(mutating: cString("RSA")), 0),
                OSSL_PARAM_construct_octet_string(
                    cString("data"), UnsafeMutableRawPointer(mutating: raw.baseAddress), raw.count),
                OSSL_PARAM_construct_end(),
            ]
            return callback(&params, argument)
        }
    }

    /// DER to a key object.
    static let decodeDER: DecodeFunction = { _, input, _, callback, argument, _, _ in
        guard let callback, let der = core.readAll(input), looksLikeKeyReference(der) else { return 1 }
        let reference: KeyReference
        do {
            reference = try KeyReference(der: der)
        } catch {
            raise(ProviderError(.malformedKeyReference, "\(error)"))
            return 0
        }
        return emit(reference, callback, argument)
    }

    /// Hands a new key object to libcrypto by reference; our keymgmt's `load` takes it.
    private static func emit(_ reference: KeyReference, _ callback: DataCallback, _ argument: UnsafeMutableRawPointer?)
        -> Int32
    {
        let key: ProviderKey
        do {
            key = try ProviderKey(reference: reference, library: try runtime.library())
            runtime.keys.prepare()
        } catch let error as ProviderError {
            raise(error)
            return 0
        } catch {
            raise(ProviderError(.malformedKeyReference, "\(error)"))
            return 0
        }
        var slot: UnsafeMutableRawPointer? = retainedPointer(KeyHolder(key))
        defer { if let left = slot { releasePointer(left, as: KeyHolder.self) } }
        var objectType = Int32(OSSL_OBJECT_PKEY)
        let handle = reference.handle
        return withUnsafeMutableBytes(of: &slot) { reference in
            var params = [
                OSSL_PARAM_construct_int(cString("type"), &objectType),
                OSSL_PARAM_construct_utf8_string(
                    cString("data-type"), UnsafeMutablePointer(mutating: cString("RSA")), 0),
                OSSL_PARAM_construct_octet_string(cString("reference"), reference.baseAddress, reference.count),
                OSSL_PARAM_construct_end(),
            ]
            let accepted = callback(&params, argument)
            trace("decoder: key handle \(handle) passed on, accepted=\(accepted)")
            return accepted
        }
    }

    /// Our structure starts `SEQUENCE { INTEGER 1, UTF8String ...`, which no PKCS#8,
    /// PKCS#1 or SubjectPublicKeyInfo does; anything else is someone else's DER.
    static func looksLikeKeyReference(_ der: [UInt8]) -> Bool {
        guard der.count > 8, der[0] == 0x30 else { return false }
        var index = 1
        if der[index] & 0x80 != 0 { index += Int(der[index] & 0x7f) }
        index += 1
        guard index + 4 < der.count else { return false }
        return der[index] == 0x02 && der[index + 1] == 0x01 && der[index + 2] == 0x01 && der[index + 3] == 0x0c
    }

    static let pemDispatch = dispatchTable([
        DispatchEntry(OSSL_FUNC_DECODER_NEWCTX, unsafeBitCast(newContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_DECODER_FREECTX, unsafeBitCast(freeContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_DECODER_DECODE, unsafeBitCast(decodePEM, to: GenericFunction.self)),
    ])

    static let derDispatch = dispatchTable([
        DispatchEntry(OSSL_FUNC_DECODER_NEWCTX, unsafeBitCast(newContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_DECODER_FREECTX, unsafeBitCast(freeContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_DECODER_DECODE, unsafeBitCast(decodeDER, to: GenericFunction.self)),
    ])
}
