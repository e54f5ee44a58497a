// RSA encryption and decryption (providers/implementations/asymciphers/rsa_enc.c in
// OpenSSL 3.0, in the order the core calls it). Decryption runs on the HSM, including TLS
// 1.2's RSA key exchange, whose padding check happens here in constant time
// (TLSPremaster.swift). Encryption is a public-key operation, run by the default provider
// with the application's parameters as they came. What the HSMs cannot decrypt with
// (X9.31 padding, OAEP digests other than SHA-1 and SHA-2) is refused by name.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

/// An OAEP digest setting. One the HSMs do not take is kept with its refusal until OAEP
/// needs it: with another padding the default provider does not use it either.
enum OAEPDigestSetting {
    case digest(HSMDigest)
    case refused(name: String, ProviderError)

    init(name: String, properties: String?, for purpose: String) throws {
        do {
            self = .digest(try HSMDigest.named(name, properties: properties, for: purpose))
        } catch let error as ProviderError where error.reason == .unsupported {
            // Answered by OpenSSL's name for it, as the default provider answers.
            let canonical = try? EVPDigest(name: name, properties: properties, context: runtime.library().context).name
            self = .refused(name: canonical ?? name, error)
        }
    }

    func digest() throws -> HSMDigest {
        switch self {
        case .digest(let digest): return digest
        case .refused(_, let error): throw error
        }
    }

    /// OpenSSL's name for the digest (EVP_MD_get0_name), as the default provider answers it.
    var name: String {
        switch self {
        case .digest(let digest): return digest.name.description
        case .refused(let name, _): return name
        }
    }
}

/// The settings of a decryption, with the default provider's parameter rules.
struct RSADecryptionSettings {
    private(set) var padding = RSAPadding.pkcs1
    /// nil until set: OAEP then uses SHA-1, as the default provider does.
    private(set) var oaepDigest: OAEPDigestSetting?
    /// nil: MGF1 follows the OAEP digest.
    private(set) var mgf1Digest: OAEPDigestSetting?
    private(set) var oaepLabel: [UInt8] = []
    private(set) var clientVersion: UInt32 = 0
    private(set) var negotiatedVersion: UInt32 = 0

    mutating func apply(_ params: ParamReader, properties: String?) throws {
        if let name = try params.string("digest") {
            oaepDigest = try OAEPDigestSetting(
                name: name, properties: params.string("digest-props") ?? properties, for: "OAEP decryption")
        }
        if let mode = try RSAPadding.read(params) {
            switch mode {
            case .pkcs1, .none, .tls: padding = mode
            case .oaep:
                padding = mode
                // As the default provider: OAEP without a digest set takes SHA-1 at once.
                if oaepDigest == nil { oaepDigest = .digest(.sha1) }
            case .pss: throw ProviderError(.unsupported, "PSS padding is for signatures, not RSA decryption")
            case .x931:
                throw ProviderError(
                    .unsupported, "RSA padding mode x931: the HSMs decrypt with pkcs1, oaep or none, not X9.31")
            }
        }
        if let name = try params.string("mgf1-digest") {
            mgf1Digest = try OAEPDigestSetting(
                name: name, properties: params.string("mgf1-properties") ?? properties, for: "MGF1 in OAEP decryption")
        }
        if let label = try params.octets("oaep-label") { oaepLabel = label }
        if let version = try params.unsigned("tls-client-version") { clientVersion = try Self.version(version) }
        if let version = try params.unsigned("tls-negotiated-version") { negotiatedVersion = try Self.version(version) }
    }

    private static func version(_ value: UInt64) throws -> UInt32 {
        guard let version = UInt32(exactly: value) else {
            throw ProviderError(.invalidInput, "TLS version \(value) does not fit an unsigned int")
        }
        return version
    }

    func answer(_ writer: ParamWriter, labelStorage: UnsafeRawBufferPointer?) throws {
        try padding.write(writer)
        // As the default provider: the OAEP digest is empty until set.
        try writer.set("digest", string: oaepDigest?.name ?? "")
        try writer.set("mgf1-digest", string: (mgf1Digest ?? oaepDigest)?.name ?? "")
        try writer.set("oaep-label", octets: oaepLabel, storage: labelStorage)
        try writer.set("tls-client-version", unsigned: UInt64(clientVersion))
        try writer.set("tls-negotiated-version", unsigned: UInt64(negotiatedVersion))
    }

    /// The HSM mechanism for a decryption that is not TLS's.
    func mechanism() throws -> DecryptMechanism {
        switch padding {
        case .none: return .raw
        case .oaep:
            let digest = try oaepDigest?.digest() ?? .sha1
            let mgf1 = try mgf1Digest?.digest() ?? digest
            for used in [digest, mgf1] where used == .md5SHA1 {
                throw ProviderError(.unsupported, "OAEP with MD5-SHA1: the HSMs do not decrypt with it")
            }
            return .oaep(digest: digest.algorithm, mgf1Digest: mgf1.algorithm, label: oaepLabel)
        default: return .pkcs1
        }
    }
}

final class RSACipherContext {
    enum Operation { case encrypt, decrypt }

    let properties: String?
    private(set) var key: ProviderKey?
    private(set) var operation: Operation?
    private(set) var settings = RSADecryptionSettings()
    /// The default provider's encryption.
    private var encryption: EVPKeyOperation?
    /// The OAEP label as `get_ctx_params` hands it out by pointer: it lives with the context.
    private var labelStorage: UnsafeMutableRawBufferPointer?

    init(properties: String?) {
        self.properties = properties.flatMap { $0.isEmpty ? nil : $0 }
    }

    deinit { labelStorage?.deallocate() }

    func copy() throws -> RSACipherContext {
        let twin = RSACipherContext(properties: properties)
        twin.key = key
        twin.operation = operation
        twin.settings = settings
        twin.encryption = try encryption?.copy()
        return twin
    }

    func beginEncrypting(key keydata: UnsafeRawPointer?, params: UnsafePointer<OSSL_PARAM>?) throws {
        let key = try rsaKey(keydata)
        trace("encryption with a \(key.type.displayName) public key, run by the default provider")
        let shadow = try EVPKeyOperation(.encrypt, key: key.publicKey, context: runtime.library().context)
        if let params { try shadow.setParameters(params) }
        self.key = key
        operation = .encrypt
        encryption = shadow
    }

    func beginDecrypting(key keydata: UnsafeRawPointer?, params: UnsafePointer<OSSL_PARAM>?) throws {
        let key = try rsaKey(keydata)
        guard key.isHSMKey else {
            throw ProviderError(.unsupported, "decryption needs an HSM key; this RSA key is public only")
        }
        self.key = key
        operation = .decrypt
        encryption = nil
        settings = RSADecryptionSettings()
        try settings.apply(ParamReader(params), properties: properties)
    }

    private func rsaKey(_ keydata: UnsafeRawPointer?) throws -> ProviderKey {
        let key = try KeyHolder.key(keydata)
        guard key.type == RSAKeyType.self else {
            throw ProviderError(.invalidInput, "RSA encryption cannot use a \(key.type.displayName) key")
        }
        return key
    }

    /// The largest output, for a size query: 48 bytes for TLS, else the modulus size.
    var outputLength: Int {
        operation == .decrypt && settings.padding == .tls ? TLSPremaster.length : key?.size ?? 0
    }

    func encrypt(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        guard operation == .encrypt, let encryption else {
            throw ProviderError(.invalidInput, "this cipher context was not initialised for encryption")
        }
        return try encryption.encrypt(input)
    }

    func decrypt(_ ciphertext: [UInt8]) throws -> [UInt8] {
        guard operation == .decrypt, let key else {
            throw ProviderError(.invalidInput, "this cipher context was not initialised for decryption")
        }
        trace(
            "decrypt: key handle \(key.reference?.handle ?? 0), padding \(settings.padding), \(ciphertext.count) bytes")
        guard settings.padding == .tls else {
            return try runtime.keys.decrypt(key, mechanism: settings.mechanism(), input: ciphertext)
        }
        let random = try SecureRandom.bytes(TLSPremaster.length, context: runtime.library().context)
        return try TLSPremaster.secret(
            ciphertext: ciphertext, keySize: key.size, clientVersion: settings.clientVersion,
            negotiatedVersion: settings.negotiatedVersion, random: random
        ) { block in try runtime.keys.decrypt(key, mechanism: .raw, input: block) }
    }

    func setParameters(_ params: UnsafePointer<OSSL_PARAM>?) throws {
        guard let params else { return }
        switch operation {
        case .encrypt?: try encryption?.setParameters(params)
        case .decrypt?: try settings.apply(ParamReader(params), properties: properties)
        case nil: throw ProviderError(.invalidInput, "cipher parameters were set before any init")
        }
    }

    func getParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>?) throws {
        guard let params else { return }
        switch operation {
        case .encrypt?: try encryption?.getParameters(params)
        case .decrypt?:
            try settings.answer(ParamWriter(params), labelStorage: storedLabel().map(UnsafeRawBufferPointer.init))
        case nil: throw ProviderError(.invalidInput, "cipher parameters were asked for before any init")
        }
    }

    private func storedLabel() -> UnsafeMutableRawBufferPointer? {
        guard !settings.oaepLabel.isEmpty else { return nil }
        if let labelStorage, labelStorage.elementsEqual(settings.oaepLabel) { return labelStorage }
        labelStorage?.deallocate()
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: settings.oaepLabel.count, alignment: 1)
        storage.copyBytes(from: settings.oaepLabel)
        labelStorage = storage
        return storage
    }
}

// MARK: - Entry points, in the order the core calls them

private func context(_ pointer: UnsafeMutableRawPointer?) throws -> RSACipherContext {
    try provided(pointer, as: RSACipherContext.self)
}

private func rsaCipherNewContext(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    retainedPointer(RSACipherContext(properties: nil))
}

private func rsaCipherEncryptInit(
    _ pointer: UnsafeMutableRawPointer?, _ key: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting an RSA encryption") { try context(pointer).beginEncrypting(key: key, params: params) }
}

private func rsaCipherEncrypt(
    _ pointer: UnsafeMutableRawPointer?, _ output: UnsafeMutablePointer<UInt8>?,
    _ outputLength: UnsafeMutablePointer<Int>?,
    _ capacity: Int, _ input: UnsafePointer<UInt8>?, _ inputLength: Int
) -> Int32 {
    reportingStatus("encrypting") {
        let context = try context(pointer)
        guard let output else {
            outputLength?.pointee = context.outputLength
            return
        }
        let bytes = UnsafeRawBufferPointer(start: inputLength > 0 ? input : nil, count: input == nil ? 0 : inputLength)
        try deliver(
            try context.encrypt(bytes), to: output, capacity: capacity, length: outputLength, what: "the ciphertext")
    }
}

private func rsaCipherDecryptInit(
    _ pointer: UnsafeMutableRawPointer?, _ key: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting an RSA decryption") { try context(pointer).beginDecrypting(key: key, params: params) }
}

/// libssl's key exchange passes a 48-byte buffer and no size query first.
private func rsaCipherDecrypt(
    _ pointer: UnsafeMutableRawPointer?, _ output: UnsafeMutablePointer<UInt8>?,
    _ outputLength: UnsafeMutablePointer<Int>?,
    _ capacity: Int, _ input: UnsafePointer<UInt8>?, _ inputLength: Int
) -> Int32 {
    reportingStatus("decrypting") {
        let context = try context(pointer)
        guard let output else {
            outputLength?.pointee = context.outputLength
            return
        }
        let plaintext = try context.decrypt(bytes(input, inputLength))
        try deliver(plaintext, to: output, capacity: capacity, length: outputLength, what: "the plaintext")
    }
}

private func rsaCipherFreeContext(_ pointer: UnsafeMutableRawPointer?) {
    releasePointer(pointer, as: RSACipherContext.self)
}

private func rsaCipherDuplicateContext(_ pointer: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    reportingResult("duplicating a cipher context") { retainedPointer(try context(pointer).copy()) }
}

private func rsaCipherGetContextParams(_ pointer: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("answering cipher parameters") { try context(pointer).getParameters(params) }
}

/// The default provider's table (rsa_enc.c).
private let rsaCipherGettable = paramTable([
    ("digest", OSSL_PARAM_UTF8_STRING), ("pad-mode", OSSL_PARAM_UTF8_STRING),
    ("mgf1-digest", OSSL_PARAM_UTF8_STRING), ("oaep-label", OSSL_PARAM_OCTET_PTR),
    ("tls-client-version", OSSL_PARAM_UNSIGNED_INTEGER), ("tls-negotiated-version", OSSL_PARAM_UNSIGNED_INTEGER),
])

private func rsaCipherGettableContextParams(_ pointer: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    rsaCipherGettable
}

private func rsaCipherSetContextParams(_ pointer: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("setting cipher parameters") { try context(pointer).setParameters(params) }
}

/// The default provider's table (rsa_enc.c).
private let rsaCipherSettable = paramTable([
    ("digest", OSSL_PARAM_UTF8_STRING), ("digest-props", OSSL_PARAM_UTF8_STRING),
    ("pad-mode", OSSL_PARAM_UTF8_STRING), ("mgf1-digest", OSSL_PARAM_UTF8_STRING),
    ("mgf1-properties", OSSL_PARAM_UTF8_STRING), ("oaep-label", OSSL_PARAM_OCTET_STRING),
    ("tls-client-version", OSSL_PARAM_UNSIGNED_INTEGER), ("tls-negotiated-version", OSSL_PARAM_UNSIGNED_INTEGER),
])

private func rsaCipherSettableContextParams(_ pointer: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    rsaCipherSettable
}

enum RSAAsymmetricCipher {
    static let dispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = DispatchTable()
        table.add(AsymmetricCipherSlot.newContext, rsaCipherNewContext)
        table.add(AsymmetricCipherSlot.encryptInit, rsaCipherEncryptInit)
        table.add(AsymmetricCipherSlot.encrypt, rsaCipherEncrypt)
        table.add(AsymmetricCipherSlot.decryptInit, rsaCipherDecryptInit)
        table.add(AsymmetricCipherSlot.decrypt, rsaCipherDecrypt)
        table.add(AsymmetricCipherSlot.freeContext, rsaCipherFreeContext)
        table.add(AsymmetricCipherSlot.duplicateContext, rsaCipherDuplicateContext)
        table.add(AsymmetricCipherSlot.getContextParams, rsaCipherGetContextParams)
        table.add(AsymmetricCipherSlot.gettableContextParams, rsaCipherGettableContextParams)
        table.add(AsymmetricCipherSlot.setContextParams, rsaCipherSetContextParams)
        table.add(AsymmetricCipherSlot.settableContextParams, rsaCipherSettableContextParams)
        return table.finished()
    }()
}
