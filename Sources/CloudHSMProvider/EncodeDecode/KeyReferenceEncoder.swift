// Encoders for HSM keys of every key type: the fake PEM where OpenSSL writes a private key
// (PEM_write_bio_PrivateKey in genrsa, genpkey, pkey), and a text form for
// `openssl pkey -text`: for the private key, what the key is, then its public part as the
// key type writes it; for the public key alone (`-pubout -text`, `-text_pub`), the default
// provider's own text. There is no import_object: only our own keys are encoded here.

import COpenSSL
import CloudHSMCore

enum KeyReferenceEncoder {
    /// What `openssl pkey -text` shows for `selection`. A selection with the private key
    /// (EVP_PKEY_print_private: `-text`) gets what an HSM key is; one without it
    /// (EVP_PKEY_print_public: `-pubout -text`, `-text_pub`) gets the public key exactly as
    /// the default provider prints it, and so does a public-only key, as the default
    /// provider prints a key without its private half.
    static func text(_ key: ProviderKey, selection: Int32) throws -> String {
        guard let reference = key.reference, selection & Selection.privateKey != 0 else {
            return try key.publicKey.publicText()
        }
        return describe(key, reference: reference)
    }

    /// An HSM key: its reference, then its public half as the key type writes it.
    static func describe(_ key: ProviderKey, reference: KeyReference) -> String {
        var text = "CloudHSM \(key.type.displayName) private key reference: (\(key.type.sizeDescription(key)))\n"
        // Both come from the key file: no control character reaches the terminal.
        text += "cluster: \(reference.clusterID.escapingControlCharacters)\n"
        text += "handle: \(reference.handle)\n"
        if let label = reference.label { text += "label: \(label.escapingControlCharacters)\n" }
        text += "(the private key stays in the HSM cluster)\n"
        return text + key.type.describePublicKey(key)
    }

    static let pemDispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = DispatchTable()
        table.add(EncoderSlot.newContext, encoderNewContext)
        table.add(EncoderSlot.freeContext, encoderFreeContext)
        table.add(EncoderSlot.doesSelection, encoderDoesPrivateKeySelection)
        table.add(EncoderSlot.encode, pemEncode)
        return table.finished()
    }()

    static let textDispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = DispatchTable()
        table.add(EncoderSlot.newContext, encoderNewContext)
        table.add(EncoderSlot.freeContext, encoderFreeContext)
        table.add(EncoderSlot.doesSelection, encoderDoesAnySelection)
        table.add(EncoderSlot.encode, textEncode)
        return table.finished()
    }()
}

/// The encoders keep no state; any non-NULL context will do.
private func encoderNewContext(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    UnsafeMutableRawPointer(mutating: cString("encoder"))
}

private func encoderFreeContext(_ context: UnsafeMutableRawPointer?) {}

private func encoderDoesPrivateKeySelection(_ context: UnsafeMutableRawPointer?, _ selection: Int32) -> Int32 {
    selection & Selection.privateKey != 0 ? 1 : 0
}

private func encoderDoesAnySelection(_ context: UnsafeMutableRawPointer?, _ selection: Int32) -> Int32 {
    selection & cshim_OSSL_KEYMGMT_SELECT_KEYPAIR() != 0 ? 1 : 0
}

private func pemEncode(
    _ context: UnsafeMutableRawPointer?, _ output: OpaquePointer?, _ keydata: UnsafeRawPointer?,
    _ abstract: UnsafePointer<OSSL_PARAM>?, _ selection: Int32, _ passphrase: PassphraseCallback?,
    _ passphraseArgument: UnsafeMutableRawPointer?
) -> Int32 {
    reportingStatus("writing a CloudHSM key file") {
        let key = try KeyHolder.key(keydata)
        guard let reference = key.reference else {
            throw ProviderError(
                .unsupported, "this \(key.type.displayName) key is public only: it has no key reference to write")
        }
        try core.write(output, Array(reference.pemEncoded().utf8))
    }
}

private func textEncode(
    _ context: UnsafeMutableRawPointer?, _ output: OpaquePointer?, _ keydata: UnsafeRawPointer?,
    _ abstract: UnsafePointer<OSSL_PARAM>?, _ selection: Int32, _ passphrase: PassphraseCallback?,
    _ passphraseArgument: UnsafeMutableRawPointer?
) -> Int32 {
    reportingStatus("writing a key as text") {
        let key = try KeyHolder.key(keydata)
        try core.write(output, Array(try KeyReferenceEncoder.text(key, selection: selection).utf8))
    }
}
