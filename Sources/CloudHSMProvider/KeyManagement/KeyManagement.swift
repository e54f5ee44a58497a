// Key management shared by every key type (pkcs11-provider's kmgmt/common.c): loading the
// key the decoder made, the questions OpenSSL asks about a key, public import and export,
// and generation in the HSMs. Export of the private half is refused by name, which is
// also what makes OpenSSL send signing and decryption with an HSM key to this provider
// instead of exporting the key elsewhere. Each key type's file (RSAKeyManagement.swift)
// adds the few functions that depend on the type and builds its table on `sharedTable`.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

/// One key or parameter generation between gen_init and gen.
final class KeyGenerationContext {
    let type: any ProviderKeyType.Type
    let generation: any KeyGeneration
    /// True for a parameter generation (`genpkey -genparam`): gen answers domain parameters only.
    let parametersOnly: Bool

    init(_ type: any ProviderKeyType.Type, parametersOnly: Bool) {
        self.type = type
        self.parametersOnly = parametersOnly
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
            let parametersOnly = selection & Selection.keyPair == 0
            if parametersOnly, !(type.hasDomainParameters && selection & Selection.domainParameters != 0) {
                throw ProviderError(
                    .unsupported,
                    "\(type.displayName) key generation makes key pairs; selection 0x\(String(selection, radix: 16)) "
                        + "asks for none")
            }
            let context = KeyGenerationContext(type, parametersOnly: parametersOnly)
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
        table.add(KeyManagementSlot.generationSetTemplate, keymgmtGenerationSetTemplate)
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

/// An answer, not an operation: 0 means "not there", with nothing raised. A deferred key
/// pair counts as there: it is made when it is used.
private func keymgmtHas(_ keydata: UnsafeRawPointer?, _ selection: Int32) -> Int32 {
    guard let holder = object(keydata, as: KeyHolder.self) else { return 0 }
    trace("keymgmt has selection=0x\(String(selection, radix: 16)) hsm=\(holder.hasKeyPair)")
    if selection & Selection.privateKey != 0, !holder.hasKeyPair { return 0 }
    if selection & Selection.publicKey != 0, holder.key == nil, holder.deferred == nil { return 0 }
    // Parameters: RSA has none, and answering 0 would fail SSL_CTX_use_cert_and_key.
    if selection & Selection.domainParameters != 0, holder.type.hasDomainParameters,
        holder.domainParameterValues.isEmpty
    {
        return 0
    }
    return 1
}

/// An answer, not an operation: 0 means "different keys", with nothing raised (a
/// deferred key that cannot be made is reported, and answers "different").
private func keymgmtMatch(_ first: UnsafeRawPointer?, _ second: UnsafeRawPointer?, _ selection: Int32) -> Int32 {
    guard let one = object(first, as: KeyHolder.self), let other = object(second, as: KeyHolder.self),
        one.type == other.type
    else { return 0 }
    if selection & Selection.keyPair == 0 {
        // Domain parameters (or nothing) only: no key needs to be made for that.
        let same =
            selection & Selection.domainParameters == 0
            || one.domainParameterValues == other.domainParameterValues
        return same ? 1 : 0
    }
    let keys = reportingResult("comparing keys") { (try one.currentKey(), try other.currentKey()) }
    guard let (a, b) = keys, let a, let b else { return 0 }
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
        if selection & Selection.keyPair != 0 {
            holder.key = try ProviderKey(
                type: type, importing: type.importedPublicParameters(reader, selection: selection))
        } else if selection & Selection.domainParameters != 0 {
            // A template (`genpkey -paramfile`) or EVP_PKEY_copy_parameters.
            holder.parameters = try type.importedDomainParameters(reader)
        }
        // Like the default provider, any other selection imports nothing.
    }
}

private func keymgmtExport(
    _ keydata: UnsafeMutableRawPointer?, _ selection: Int32, _ callback: DataCallback?,
    _ argument: UnsafeMutableRawPointer?
) -> Int32 {
    reportingStatus("exporting a key") {
        let holder = try provided(keydata, as: KeyHolder.self)
        guard let callback else { throw ProviderError(.invalidInput, "export was given no callback") }
        let exported: [ParamValue]
        if selection & Selection.keyPair == 0 {
            // Domain parameters alone: a deferred key is not made for them.
            exported = selection & Selection.domainParameters != 0 ? holder.domainParameterValues : []
        } else {
            let key = try KeyHolder.key(keydata)
            if selection & Selection.privateKey != 0, key.isHSMKey {
                throw ProviderError(
                    .privateKeyExportRefused,
                    "export of the private half of \(key.type.displayName) key handle \(key.reference?.handle ?? 0) "
                        + "refused; only its public key can be exported")
            }
            exported = key.type.exportedParameters(of: key, selection: selection)
        }
        guard !exported.isEmpty else { return }
        let list = try parameterList(exported)
        guard list.withUnsafePointer({ callback($0, argument) }) == 1 else {
            throw ProviderError(.openSSLFailed, "OpenSSL did not take the exported \(holder.type.displayName) key")
        }
    }
}

private func keymgmtGetParams(_ keydata: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?) -> Int32
{
    reportingStatus("answering key parameters") {
        let holder = try provided(keydata, as: KeyHolder.self)
        let type = holder.type
        let writer = ParamWriter(params)
        if holder.hasKeyPair, let name = type.privateParameterNames.first(where: { writer.isRequested($0) }) {
            throw ProviderError(
                .privateKeyExportRefused, "key parameter '\(name)' is part of the private key, which stays in the HSMs")
        }
        // Sizes and domain parameters come from the parameters alone: libcrypto asks for the
        // sizes right after every generation, which must not make a deferred key.
        if holder.key == nil, let parameters = holder.domainParameters,
            holder.deferred == nil || !type.publicKeyParameterNames.contains(where: { writer.isRequested($0) })
        {
            if let params = writer.params { try parameters.key.getParameters(params) }
            return
        }
        let key = try KeyHolder.key(keydata)
        try writer.set("bits", int: key.bits)
        try writer.set("security-bits", int: key.securityBits)
        try writer.set("max-size", int: key.size)
        for value in key.domainParameters + key.publicParameters {
            switch value {
            case .int(let name, let number): try writer.set(name, int: number)
            case .string(let name, let text): try writer.set(name, string: text)
            case .bigNumber(let name, let bytes): try writer.set(name, bigEndian: bytes)
            case .octets(let name, let bytes): try writer.set(name, octets: bytes)
            }
        }
        try key.type.answerParameters(writer, for: key)
    }
}

/// Key objects are immutable once made, so a duplicate shares the key (or the promise of one).
private func keymgmtDuplicate(_ keydata: UnsafeRawPointer?, _ selection: Int32) -> UnsafeMutableRawPointer? {
    reportingResult("duplicating a key") {
        retainedPointer(try provided(keydata, as: KeyHolder.self).duplicate())
    }
}

/// `openssl pkey -pubcheck` and `-check`. The public key gets OpenSSL's own check; the
/// private half of an HSM key, which nothing outside the HSMs can read, is checked by what
/// it does: a signature made in the HSMs must verify with the public key.
private func keymgmtValidate(_ keydata: UnsafeRawPointer?, _ selection: Int32, _ checkType: Int32) -> Int32 {
    reportingStatus("checking a key") {
        let holder = try provided(keydata, as: KeyHolder.self)
        if selection & Selection.keyPair == 0 {
            // Domain parameters: ours are named curves, which OpenSSL knows to be sound.
            if selection & Selection.domainParameters != 0, holder.type.hasDomainParameters,
                holder.domainParameterValues.isEmpty
            {
                throw ProviderError(
                    .invalidInput, "this \(holder.type.displayName) key object holds no domain parameters")
            }
            return
        }
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

/// `ecparam -genkey` and `genpkey -paramfile`: the template's domain parameters (a key of
/// ours, or one OpenSSL imported into ours) become the generation's.
private func keymgmtGenerationSetTemplate(_ context: UnsafeMutableRawPointer?, _ template: UnsafeMutableRawPointer?)
    -> Int32
{
    reportingStatus("taking the parameters of a template key") {
        let generation = try provided(context, as: KeyGenerationContext.self)
        let holder = try provided(template, as: KeyHolder.self)
        // A type without domain parameters has nothing to take, as OpenSSL's own RSA.
        guard holder.type.hasDomainParameters else { return }
        var parameters = holder.domainParameters
        if parameters == nil, let key = try holder.currentKey() {
            parameters = try DomainParameters(type: key.type, values: key.domainParameters)
        }
        guard let parameters else {
            throw ProviderError(.invalidInput, "the template key holds no \(holder.type.displayName) domain parameters")
        }
        try generation.generation.apply(template: parameters)
    }
}

private func keymgmtGenerate(
    _ context: UnsafeMutableRawPointer?, _ callback: DataCallback?, _ argument: UnsafeMutableRawPointer?
)
    -> UnsafeMutableRawPointer?
{
    reportingResult("generating a key in the HSMs") {
        let generation = try provided(context, as: KeyGenerationContext.self)
        if let parameters = try generation.generation.domainParameters() {
            let holder = KeyHolder(generation.type)
            if generation.parametersOnly {
                holder.parameters = parameters
            } else {
                holder.deferred = DeferredKey(parameters: parameters, generation: generation.generation)
            }
            return retainedPointer(holder)
        }
        guard !generation.parametersOnly else {
            throw ProviderError(
                .unsupported, "\(generation.type.displayName) keys have no domain parameters to generate")
        }
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
