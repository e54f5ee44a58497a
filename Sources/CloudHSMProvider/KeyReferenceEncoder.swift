// Encoders for HSM keys: the fake PEM where OpenSSL writes a private key
// (PEM_write_bio_PrivateKey in genrsa, genpkey, pkey), and a text form for
// `openssl pkey -text`. There is no import_object: only our own keys are encoded here.

import COpenSSL
import CloudHSMCore

enum KeyReferenceEncoder {
    static let newContext: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { _ in
        UnsafeMutableRawPointer(mutating: cString("encoder"))
    }

    static let freeContext: @convention(c) (UnsafeMutableRawPointer?) -> Void = { _ in }

    static let doesPrivateKeySelection: @convention(c) (UnsafeMutableRawPointer?, Int32) -> Int32 = { _, selection in
        selection & Int32(OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 ? 1 : 0
    }

    static let doesAnySelection: @convention(c) (UnsafeMutableRawPointer?, Int32) -> Int32 = { _, selection in
        selection & cshim_OSSL_KEYMGMT_SELECT_KEYPAIR() != 0 ? 1 : 0
    }

    typealias EncodeFunction =
        @convention(c) (
            UnsafeMutableRawPointer?, OpaquePointer?, UnsafeRawPointer?, UnsafePointer<OSSL_PARAM>?, Int32,
            UnsafeMutableRawPointer?, UnsafeMutableRawPointer?
        ) -> Int32

    static let encodePEM: EncodeFunction = { _, output, keydata, _, _, _, _ in
        guard let key = object(UnsafeMutableRawPointer(mutating: keydata), as: KeyHolder.self)?.key,
            let reference = key.reference
        else { return 0 }
        return core.write(output, Array(reference.pemEncoded().utf8)) ? 1 : 0
    }

    static let encodeText: EncodeFunction = { _, output, keydata, _, _, _, _ in
        guard let key = object(UnsafeMutableRawPointer(mutating: keydata), as: KeyHolder.self)?.key else { return 0 }
        return core.write(output, Array(describe(key).utf8)) ? 1 : 0
    }

    static func describe(_ key: ProviderKey) -> String {
        var text: String
        if let reference = key.reference {
            text = "CloudHSM RSA private key reference: (\(key.bits) bit)\n"
            // Both come from the key file: no control character reaches the terminal.
            text += "cluster: \(reference.clusterID.escapingControlCharacters)\n"
            text += "handle: \(reference.handle)\n"
            if let label = reference.label { text += "label: \(label.escapingControlCharacters)\n" }
            text += "(the private key stays in the HSM cluster)\n"
        } else {
            text = "RSA Public-Key: (\(key.bits) bit)\n"
        }
        text += "Modulus:" + hexBlock(key.modulus)
        let exponent = key.publicExponent.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        text += "Exponent: \(exponent) (0x\(String(exponent, radix: 16)))\n"
        return text
    }

    /// OpenSSL's layout: colon-separated bytes, fifteen per line, a leading zero byte
    /// when the top bit is set.
    private static func hexBlock(_ bytes: [UInt8]) -> String {
        let padded = (bytes.first ?? 0) & 0x80 != 0 ? [0] + bytes : bytes
        var text = ""
        for (index, byte) in padded.enumerated() {
            if index % 15 == 0 { text += "\n    " }
            text += (byte < 16 ? "0" : "") + String(byte, radix: 16)
            if index != padded.count - 1 { text += ":" }
        }
        return text + "\n"
    }

    static let pemDispatch = dispatchTable([
        DispatchEntry(OSSL_FUNC_ENCODER_NEWCTX, unsafeBitCast(newContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ENCODER_FREECTX, unsafeBitCast(freeContext, to: GenericFunction.self)),
        DispatchEntry(
            OSSL_FUNC_ENCODER_DOES_SELECTION, unsafeBitCast(doesPrivateKeySelection, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ENCODER_ENCODE, unsafeBitCast(encodePEM, to: GenericFunction.self)),
    ])

    static let textDispatch = dispatchTable([
        DispatchEntry(OSSL_FUNC_ENCODER_NEWCTX, unsafeBitCast(newContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ENCODER_FREECTX, unsafeBitCast(freeContext, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ENCODER_DOES_SELECTION, unsafeBitCast(doesAnySelection, to: GenericFunction.self)),
        DispatchEntry(OSSL_FUNC_ENCODER_ENCODE, unsafeBitCast(encodeText, to: GenericFunction.self)),
    ])
}
