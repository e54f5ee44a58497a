// Key management shared by every key type (pkcs11-provider's kmgmt/common.c): loading the
// key the decoder made, the questions OpenSSL asks about a key, public import and export,
// and generation in the HSMs. Export of the private half is refused by name, which is
// also what makes OpenSSL send signing and decryption with an HSM key to this provider
// instead of exporting the key elsewhere. Each key type's file (RSAKeyManagement.swift)
// adds the few functions that depend on the type and builds its table on `sharedTable`.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

/// One key generation between gen_init and gen.
final class KeyGenerationContext {
    let type: any ProviderKeyType.Type
    let generation: any KeyGeneration

    init(_ type: any ProviderKeyType.Type) {
        self.type = type
        generation = type.makeGeneration()
    }
}

enum KeyManagement {
    /// `new` for a key type: an empty key object that knows its type.
    static func newKey(_ type: any ProviderKeyType.Type) -> UnsafeMutableRawPointer? {
        retainedPointer(KeyHolder(type))
    }

    /// `gen_init` for a key type.
    static func generationInit(
        _ type: any ProviderKeyType.Type, selection: Int32, params: UnsafePointer<OSSL_PARAM>?
    ) -> UnsafeMutableRawPointer? {
        reportingResult("starting \(type.displayName) key generation") {
            guard selection & Selection.keyPair != 0 else {
                throw ProviderError(
                    .unsupported,
                    "key generation makes key pairs; selection 0x\(String(selection, radix: 16)) asks for none")
            }
            let context = KeyGenerationContext(type)
            try context.generation.apply(ParamReader(params))
            return retainedPointer(context)
        }
    }

    /// The functions every key type's table shares.
    static var sharedTable: DispatchTable {
        var table = DispatchTable()
        table.add(KeyManagementSlot.free, keymgmtFree)
        table.add(KeyManagementSlot.load, keymgmtLoad)
        table.add(KeyManagementSlot.has, keymgmtHas)
        table.add(KeyManagementSlot.match, keymgmtMatch)
        table.add(KeyManagementSlot.importKey, keymgmtImport)
        table.add(KeyManagementSlot.exportKey, keymgmtExport)
        table.add(KeyManagementSlot.getParams, keymgmtGetParams)
        table.add(KeyManagementSlot.duplicate, keymgmtDuplicate)
        table.add(KeyManagementSlot.validate, keymgmtValidate)
        table.add(KeyManagementSlot.generationSetParams, keymgmtGenerationSetParams)
        table.add(KeyManagementSlot.generate, keymgmtGenerate)
        table.add(KeyManagementSlot.generationCleanup, keymgmtGenerationCleanup)
        return table
    }
}

// MARK: - Key objects

private func keymgmtFree(_ keydata: UnsafeMutableRawPointer?) {
    releasePointer(keydata, as: KeyHolder.self)
}

/// Takes the key object the decoder passed by reference, and its ownership.
private func keymgmtLoad(_ reference: UnsafeRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    trace("keymgmt load (reference of \(size) bytes)")
    return reportingResult("loading a decoded key") {
        guard let reference, size == MemoryLayout<UnsafeMutableRawPointer?>.size else {
            throw ProviderError(.invalidInput, "the key reference passed to load is \(size) bytes, not a key object")
        }
        let slot = UnsafeMutableRawPointer(mutating: reference).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        guard let holder = slot.pointee else { throw ProviderError(.invalidInput, "the key reference is empty") }
        slot.pointee = nil
        return holder
    }
}

/// An answer, not an operation: 0 means "not there", with nothing raised.
private func keymgmtHas(_ keydata: UnsafeRawPointer?, _ selection: Int32) -> Int32 {
    let key = object(keydata, as: KeyHolder.self)?.key
    trace("keymgmt has selection=0x\(String(selection, radix: 16)) hsm=\(key?.isHSMKey ?? false)")
    if selection & Selection.privateKey != 0, key?.isHSMKey != true { return 0 }
    if selection & Selection.publicKey != 0, key == nil { return 0 }
    // Parameters: RSA has none, and answering 0 would fail SSL_CTX_use_cert_and_key.
    return 1
}

/// An answer, not an operation: 0 means "different keys", with nothing raised.
private func keymgmtMatch(_ first: UnsafeRawPointer?, _ second: UnsafeRawPointer?, _ selection: Int32) -> Int32 {
    guard let a = object(first, as: KeyHolder.self)?.key, let b = object(second, as: KeyHolder.self)?.key else {
        return 0
    }
    return a.type.matches(a, b, selection: selection) ? 1 : 0
}

/// Accepts public keys only. A software private key stays with its own provider, so
/// nothing here ever holds private key material.
private func keymgmtImport(
    _ keydata: UnsafeMutableRawPointer?, _ selection: Int32, _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("importing a key") {
        let holder = try provided(keydata, as: KeyHolder.self)
        let type = holder.type
        let reader = ParamReader(params)
        if let name = type.privateParameterNames.first(where: { reader.contains($0) }) {
            throw ProviderError(
                .unsupported,
                "the CloudHSM provider holds no software private keys (import of '\(name)' refused); the key's own "
                    + "provider uses it, or import it into the HSMs with key_mgmt_util importPrivateKey")
        }
        // Like the default provider: a selection without the key pair imports nothing.
        guard selection & Selection.keyPair != 0 else { return }
        holder.key = try ProviderKey(type: type, importing: type.importedPublicParameters(reader, selection: selection))
    }
}

private func keymgmtExport(
    _ keydata: UnsafeMutableRawPointer?, _ selection: Int32, _ callback: DataCallback?,
    _ argument: UnsafeMutableRawPointer?
) -> Int32 {
    reportingStatus("exporting a key") {
        let key = try KeyHolder.key(keydata)
        guard let callback else { throw ProviderError(.invalidInput, "export was given no callback") }
        if selection & Selection.privateKey != 0, key.isHSMKey {
            throw ProviderError(
                .privateKeyExportRefused,
                "export of the private half of \(key.type.displayName) key handle \(key.reference?.handle ?? 0) refused; "
                    + "only its public key can be exported")
        }
        let exported = key.type.exportedParameters(of: key, selection: selection)
        guard !exported.isEmpty else { return }
        let list = try parameterList(exported)
        guard list.withUnsafePointer({ callback($0, argument) }) == 1 else {
            throw ProviderError(.openSSLFailed, "OpenSSL did not take the exported \(key.type.displayName) public key")
        }
    }
}

private func keymgmtGetParams(_ keydata: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?) -> Int32
{
    reportingStatus("answering key parameters") {
        let key = try KeyHolder.key(keydata)
        let writer = ParamWriter(params)
        if key.isHSMKey, let name = key.type.privateParameterNames.first(where: { writer.isRequested($0) }) {
            throw ProviderError(
                .privateKeyExportRefused, "key parameter '\(name)' is part of the private key, which stays in the HSMs")
        }
        try writer.set("bits", int: key.bits)
        try writer.set("security-bits", int: key.securityBits)
        try writer.set("max-size", int: key.size)
        for value in key.publicParameters {
            switch value {
            case .int(let name, let number): try writer.set(name, int: number)
            case .string(let name, let text): try writer.set(name, string: text)
            case .bigNumber(let name, let bytes): try writer.set(name, bigEndian: bytes)
            }
        }
        try key.type.answerParameters(writer, for: key)
    }
}

/// Key objects are immutable once made, so a duplicate shares the key.
private func keymgmtDuplicate(_ keydata: UnsafeRawPointer?, _ selection: Int32) -> UnsafeMutableRawPointer? {
    reportingResult("duplicating a key") {
        let holder = try provided(keydata, as: KeyHolder.self)
        return retainedPointer(KeyHolder(holder.type, holder.key))
    }
}

/// `openssl pkey -pubcheck` and `-check`. The public key gets OpenSSL's own check; the
/// private half of an HSM key, which nothing outside the HSMs can read, is checked by what
/// it does: a signature made in the HSMs must verify with the public key.
private func keymgmtValidate(_ keydata: UnsafeRawPointer?, _ selection: Int32, _ checkType: Int32) -> Int32 {
    reportingStatus("checking a key") {
        let key = try KeyHolder.key(keydata)
        if selection & Selection.keyPair != 0 {
            guard try key.publicKey.checkPublicKey(context: runtime.library().context) else {
                throw ProviderError(.invalidInput, "the \(key.type.displayName) public key fails OpenSSL's check")
            }
        }
        guard selection & Selection.privateKey != 0 else { return }
        guard key.isHSMKey else {
            throw ProviderError(
                .invalidInput, "this \(key.type.displayName) key is public only: it has no private half")
        }
        try KeyManagement.checkPair(key)
    }
}

extension KeyManagement {
    /// Signs a random digest with the HSM key and verifies the signature locally.
    static func checkPair(_ key: ProviderKey) throws {
        let scheme = key.type.signatureScheme.init()
        let digest = key.type.signatureScheme.defaultDigest
        let input = try SecureRandom.bytes(digest.length, context: runtime.library().context)
        let signature = try runtime.keys.sign(
            key, mechanism: scheme.mechanism(for: input, digest: digest, key: key), input: input)
        let verification = try EVPKeyOperation(.verify, key: key.publicKey, context: runtime.library().context)
        try verification.setParameters(parameterList(scheme.verificationSettings(digest: digest, key: key)))
        let verified = signature.withUnsafeBytes { signatureBytes in
            input.withUnsafeBytes { verification.verify(signature: signatureBytes, input: $0) }
        }
        guard verified else {
            throw ProviderError(
                .publicKeyMismatch,
                "key handle \(key.reference?.handle ?? 0) signed, but the public key in the key file does not verify "
                    + "its signature: they are not a pair")
        }
    }
}

// MARK: - Generation

private func keymgmtGenerationSetParams(_ context: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("setting key generation parameters") {
        try provided(context, as: KeyGenerationContext.self).generation.apply(ParamReader(params))
    }
}

private func keymgmtGenerate(
    _ context: UnsafeMutableRawPointer?, _ callback: DataCallback?, _ argument: UnsafeMutableRawPointer?
)
    -> UnsafeMutableRawPointer?
{
    reportingResult("generating a key in the HSMs") {
        let generation = try provided(context, as: KeyGenerationContext.self)
        let reference = try generation.generation.generate(with: runtime.keys)
        let key = try ProviderKey(reference: reference)
        guard key.type == generation.type else {
            throw ProviderError(
                .hsmOperationFailed,
                "the HSMs made \(key.type.displayName) key \(reference.handle), not \(generation.type.displayName)")
        }
        trace("generated \(key.type.displayName) key handle \(reference.handle)")
        return retainedPointer(KeyHolder(key.type, key))
    }
}

private func keymgmtGenerationCleanup(_ context: UnsafeMutableRawPointer?) {
    releasePointer(context, as: KeyGenerationContext.self)
}
