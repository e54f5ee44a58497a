// Owners for the libcrypto objects the OpenSSL provider uses: public keys, key
// operations run on the default provider (verification, encryption, algorithm
// identifiers), fetched digests, running hashes, and parameter lists. Each class takes
// ownership of one pointer in init and frees it in deinit; the provider calls these and
// never frees an EVP object itself.
//
// Error queue rule for every call here: what OpenSSL puts on this thread's queue during a
// call that succeeds is removed (a probe that failed inside OpenSSL must not reach the
// application: leftover entries break TLS handshakes); after a call that fails it stays,
// so the application sees OpenSSL's own reason, and the error thrown carries its text.

import COpenSSL

/// Runs `call` under an error mark and applies the error queue rule above.
///
/// - Returns: the call's result when it is positive.
/// - Throws: `OpenSSLError` with the newest queued reason when it is not.
@discardableResult
func checkedCall(_ what: String, _ call: () -> Int32) throws -> Int32 {
    ERR_set_mark()
    let result = call()
    if result > 0 {
        ERR_pop_to_mark()
        return result
    }
    ERR_clear_last_mark()
    throw OpenSSLError(operation: what, reasons: newestOpenSSLError().map { [$0] } ?? [])
}

/// The same rule for calls that answer a pointer.
func checkedPointer(_ what: String, _ call: () -> OpaquePointer?) throws -> OpaquePointer {
    ERR_set_mark()
    if let pointer = call() {
        ERR_pop_to_mark()
        return pointer
    }
    ERR_clear_last_mark()
    throw OpenSSLError(operation: what, reasons: newestOpenSSLError().map { [$0] } ?? [])
}

/// The text of the newest entry on this thread's error queue, with its detail, without
/// removing it.
func newestOpenSSLError() -> String? {
    var data: UnsafePointer<CChar>? = nil
    var flags: Int32 = 0
    let code = ERR_peek_last_error_data(&data, &flags)
    guard code != 0 else { return nil }
    var buffer = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(code, &buffer, buffer.count)
    var text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    if let data, flags & ERR_TXT_STRING != 0, data.pointee != 0 { text += ": " + String(cString: data) }
    return text
}

/// A C string that lives for the whole process, for OSSL_PARAM keys.
func staticCString(_ string: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(string.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Runs `body` and removes whatever it put on this thread's error queue, for calls whose
/// failure is an answer (is this digest name known at all?), not an error.
public func discardingOpenSSLErrors<R>(_ body: () throws -> R) rethrows -> R {
    ERR_set_mark()
    defer { ERR_pop_to_mark() }
    return try body()
}

// MARK: - Digests

/// A message digest fetched once from a library context (OpenSSL 3.0 takes a lock on every
/// fetch, which a TLS handshake would otherwise pay again and again).
public final class EVPDigest: @unchecked Sendable {
    // Immutable after init; OpenSSL allows concurrent use of one fetched EVP_MD.
    let pointer: OpaquePointer

    /// - Parameter properties: an OpenSSL property query, or nil for the context's default.
    public init(name: String, properties: String? = nil, context: CryptoContext) throws {
        pointer = try checkedPointer("fetching digest \(name)") { EVP_MD_fetch(context.pointer, name, properties) }
    }

    deinit { EVP_MD_free(pointer) }

    /// OpenSSL's canonical name ("SHA2-256" for any of its spellings).
    public var name: String { EVP_MD_get0_name(pointer).map { String(cString: $0) } ?? "" }
    public var size: Int { Int(EVP_MD_get_size(pointer)) }

    /// True when `name` is one of this digest's names.
    public func isA(_ name: String) -> Bool { EVP_MD_is_a(pointer, name) == 1 }

    /// Hashes `bytes` in one call (EVP_Digest: no context to keep).
    public func hash(_ bytes: UnsafeRawBufferPointer) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        try checkedCall("hashing with \(name)") {
            out.withUnsafeMutableBufferPointer {
                EVP_Digest(bytes.baseAddress, bytes.count, $0.baseAddress, &length, pointer, nil)
            }
        }
        out.removeSubrange(Int(length)...)
        return out
    }

    /// The parameters a running hash of this digest takes (EVP_MD_settable_ctx_params).
    public var settableContextParameters: UnsafePointer<OSSL_PARAM>? { EVP_MD_settable_ctx_params(pointer) }
    public var gettableContextParameters: UnsafePointer<OSSL_PARAM>? { EVP_MD_gettable_ctx_params(pointer) }
}

/// A running hash (EVP_MD_CTX), for signatures over data that arrives in parts.
public final class EVPDigestOperation {
    let pointer: OpaquePointer
    public let digest: EVPDigest

    public init(digest: EVPDigest) throws {
        pointer = try checkedPointer("creating a digest operation") { EVP_MD_CTX_new() }
        self.digest = digest
        do {
            try checkedCall("starting \(digest.name)") { EVP_DigestInit_ex2(pointer, digest.pointer, nil) }
        } catch {
            EVP_MD_CTX_free(pointer)
            throw error
        }
    }

    private init(copying other: EVPDigestOperation) throws {
        pointer = try checkedPointer("creating a digest operation") { EVP_MD_CTX_new() }
        digest = other.digest
        do {
            try checkedCall("copying a digest operation") { EVP_MD_CTX_copy_ex(pointer, other.pointer) }
        } catch {
            EVP_MD_CTX_free(pointer)
            throw error
        }
    }

    deinit { EVP_MD_CTX_free(pointer) }

    /// An independent copy that continues from the same state.
    public func copy() throws -> EVPDigestOperation { try EVPDigestOperation(copying: self) }

    public func update(_ bytes: UnsafeRawBufferPointer) throws {
        try checkedCall("hashing with \(digest.name)") { EVP_DigestUpdate(pointer, bytes.baseAddress, bytes.count) }
    }

    /// The digest of everything so far, computed on a copy, so this operation can take
    /// more data or finish again.
    public func currentDigest() throws -> [UInt8] {
        let copy = try copy()
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        try withExtendedLifetime(copy) {
            try checkedCall("finishing \(digest.name)") {
                out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(copy.pointer, $0.baseAddress, &length) }
            }
        }
        out.removeSubrange(Int(length)...)
        return out
    }

    /// Hands parameters to the digest implementation (EVP_MD_CTX_set_params).
    public func setParameters(_ params: UnsafePointer<OSSL_PARAM>) throws {
        try checkedCall("setting \(digest.name) parameters") { EVP_MD_CTX_set_params(pointer, params) }
    }

    public func getParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>) throws {
        try checkedCall("reading \(digest.name) parameters") { EVP_MD_CTX_get_params(pointer, params) }
    }
}

// MARK: - Keys

/// A key in a library context (EVP_PKEY). The provider holds public keys only: the
/// private half of an HSM key never leaves the HSMs.
public final class EVPKey: @unchecked Sendable {
    // Immutable after init; OpenSSL allows concurrent operations on one key as long as
    // each uses its own EVP_PKEY_CTX.
    let pointer: OpaquePointer

    /// A public key from exactly one DER SubjectPublicKeyInfo.
    public init(publicKeyInfo: [UInt8], context: CryptoContext) throws {
        ERR_set_mark()
        guard let key = decodeWhole(publicKeyInfo, { d2i_PUBKEY_ex(nil, $0, $1, context.pointer, nil) }) else {
            ERR_pop_to_mark()
            throw CryptoError.invalidKeyData("not a DER SubjectPublicKeyInfo of a key type OpenSSL knows")
        }
        ERR_pop_to_mark()
        pointer = key
    }

    /// A public key of type `algorithm` from its parameters (EVP_PKEY_fromdata).
    ///
    /// - Parameter algorithm: static, because the key operation keeps the name's pointer.
    public convenience init(algorithm: StaticString, publicParameters: ParamList, context: CryptoContext) throws {
        try self.init(
            algorithm: algorithm, parameters: publicParameters, selection: cshim_EVP_PKEY_PUBLIC_KEY(),
            what: "public key", context: context)
    }

    /// A key that holds only domain parameters (an EC group), from its parameters: what a
    /// parameter generation or a parameter import makes. It answers sizes and the group's
    /// parameters, and has no public key.
    public convenience init(algorithm: StaticString, domainParameters: ParamList, context: CryptoContext) throws {
        try self.init(
            algorithm: algorithm, parameters: domainParameters,
            selection: Int32(OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS | OSSL_KEYMGMT_SELECT_OTHER_PARAMETERS),
            what: "set of domain parameters", context: context)
    }

    private init(
        algorithm: StaticString, parameters: ParamList, selection: Int32, what: String, context: CryptoContext
    ) throws {
        let operation = try checkedPointer("creating a \(algorithm) key operation") {
            EVP_PKEY_CTX_new_from_name(context.pointer, staticCString(algorithm), nil)
        }
        defer { EVP_PKEY_CTX_free(operation) }
        var key: OpaquePointer? = nil
        try checkedCall("starting a \(algorithm) key import") { EVP_PKEY_fromdata_init(operation) }
        try checkedCall("importing a \(algorithm) \(what)") {
            parameters.withUnsafePointer { EVP_PKEY_fromdata(operation, &key, selection, $0) }
        }
        guard let key else { throw OpenSSLError(operation: "importing a \(algorithm) \(what)", reasons: []) }
        pointer = key
    }

    deinit { EVP_PKEY_free(pointer) }

    /// The key type's name as its keymgmt gives it ("RSA", "EC", "ED25519").
    public var typeName: String { EVP_PKEY_get0_type_name(pointer).map { String(cString: $0) } ?? "unknown" }
    public func isA(_ name: String) -> Bool { EVP_PKEY_is_a(pointer, name) == 1 }
    public var bits: Int { Int(EVP_PKEY_get_bits(pointer)) }
    /// The largest signature or ciphertext, in bytes.
    public var size: Int { Int(EVP_PKEY_get_size(pointer)) }
    public var securityBits: Int { Int(EVP_PKEY_get_security_bits(pointer)) }

    /// DER SubjectPublicKeyInfo.
    public func publicKeyInfo() throws -> [UInt8] {
        try OwnedPKey.encodePublicKeyInfo(pointer)
    }

    /// The public key as text, exactly as `openssl pkey -pubin -text` prints it: the key's
    /// own provider writes it (EVP_PKEY_print_public with no indent), so a key in a
    /// default-provider context reads as the default provider's.
    public func publicText() throws -> String {
        let bio = try OwnedMemoryBIO()
        try checkedCall("writing the public key as text") { EVP_PKEY_print_public(bio.pointer, pointer, 0, nil) }
        return String(decoding: bio.contents, as: UTF8.self)
    }

    /// Runs OpenSSL's public key check (EVP_PKEY_public_check), as `openssl pkey
    /// -pubcheck` does; false with OpenSSL's reason left on the queue.
    public func checkPublicKey(context: CryptoContext) throws -> Bool {
        let operation = try checkedPointer("creating a key check") {
            EVP_PKEY_CTX_new_from_pkey(context.pointer, pointer, nil)
        }
        defer { EVP_PKEY_CTX_free(operation) }
        ERR_set_mark()
        let result = EVP_PKEY_public_check(operation)
        if result == 1 { ERR_pop_to_mark() } else { ERR_clear_last_mark() }
        return result == 1
    }

    /// Answers `params` as the key's own provider does (EVP_PKEY_get_params): every
    /// parameter it knows is filled in, the others are left alone.
    public func getParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>) throws {
        try checkedCall("reading key parameters") { EVP_PKEY_get_params(pointer, params) }
    }

    /// A UTF-8 string parameter ("group", "point-format").
    public func string(_ name: StaticString) throws -> String {
        var buffer = [CChar](repeating: 0, count: 128)
        var length = 0
        try checkedCall("reading key parameter \(name)") {
            EVP_PKEY_get_utf8_string_param(pointer, staticCString(name), &buffer, buffer.count, &length)
        }
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// An octet string parameter ("pub", "encoded-pub-key"), measured then read.
    public func octets(_ name: StaticString) throws -> [UInt8] {
        var length = 0
        try checkedCall("measuring key parameter \(name)") {
            EVP_PKEY_get_octet_string_param(pointer, staticCString(name), nil, 0, &length)
        }
        var out = [UInt8](repeating: 0, count: length)
        try checkedCall("reading key parameter \(name)") {
            EVP_PKEY_get_octet_string_param(pointer, staticCString(name), &out, out.count, &length)
        }
        return Array(out.prefix(length))
    }

    /// A big-number parameter ("n", "e") as unsigned big-endian bytes.
    public func bigNumber(_ name: String) throws -> [UInt8] {
        var number: OpaquePointer? = nil
        try checkedCall("reading key parameter \(name)") { EVP_PKEY_get_bn_param(pointer, name, &number) }
        guard let number else { throw OpenSSLError(operation: "reading key parameter \(name)", reasons: []) }
        return BigNumber(taking: number).bigEndian
    }
}

extension OwnedPKey {
    /// i2d_PUBKEY, measured then written.
    static func encodePublicKeyInfo(_ key: OpaquePointer) throws -> [UInt8] {
        let length = try checkedCall("measuring the public key") { i2d_PUBKEY(key, nil) }
        var out = [UInt8](repeating: 0, count: Int(length))
        try checkedCall("encoding the public key") {
            out.withUnsafeMutableBufferPointer { buffer -> Int32 in
                var cursor = buffer.baseAddress
                return i2d_PUBKEY(key, &cursor) == length ? length : 0
            }
        }
        return out
    }
}

/// One public-key operation run by the default provider (EVP_PKEY_CTX): verification,
/// recovery, encryption, or just a configured context asked for its algorithm identifier.
public final class EVPKeyOperation {
    public enum Kind: Sendable {
        case verify, verifyRecover, encrypt
    }

    let pointer: OpaquePointer
    public let kind: Kind

    public init(_ kind: Kind, key: EVPKey, context: CryptoContext) throws {
        pointer = try checkedPointer("creating a key operation") {
            EVP_PKEY_CTX_new_from_pkey(context.pointer, key.pointer, nil)
        }
        self.kind = kind
        do {
            switch kind {
            case .verify: try checkedCall("starting a verification") { EVP_PKEY_verify_init(pointer) }
            case .verifyRecover:
                try checkedCall("starting a signature recovery") { EVP_PKEY_verify_recover_init(pointer) }
            case .encrypt: try checkedCall("starting an encryption") { EVP_PKEY_encrypt_init(pointer) }
            }
        } catch {
            EVP_PKEY_CTX_free(pointer)
            throw error
        }
    }

    private init(copying other: EVPKeyOperation) throws {
        pointer = try checkedPointer("copying a key operation") { EVP_PKEY_CTX_dup(other.pointer) }
        kind = other.kind
    }

    deinit { EVP_PKEY_CTX_free(pointer) }

    public func copy() throws -> EVPKeyOperation { try EVPKeyOperation(copying: self) }

    public func setParameters(_ params: UnsafePointer<OSSL_PARAM>) throws {
        try checkedCall("setting operation parameters") { EVP_PKEY_CTX_set_params(pointer, params) }
    }

    public func setParameters(_ list: ParamList) throws {
        try list.withUnsafePointer { try setParameters($0) }
    }

    public func getParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>) throws {
        try checkedCall("reading operation parameters") { EVP_PKEY_CTX_get_params(pointer, params) }
    }

    /// True when `signature` signs `input`; false when it does not (with OpenSSL's reason
    /// left on the queue).
    public func verify(signature: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer) -> Bool {
        ERR_set_mark()
        let result = EVP_PKEY_verify(
            pointer, signature.baseAddress?.assumingMemoryBound(to: UInt8.self), signature.count,
            input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count)
        if result == 1 { ERR_pop_to_mark() } else { ERR_clear_last_mark() }
        return result == 1
    }

    /// What the signature holds (EVP_PKEY_verify_recover).
    public func recover(signature: UnsafeRawBufferPointer) throws -> [UInt8] {
        try run("recovering the signed data", signature) { EVP_PKEY_verify_recover($0, $1, $2, $3, $4) }
    }

    public func encrypt(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        try run("encrypting", input) { EVP_PKEY_encrypt($0, $1, $2, $3, $4) }
    }

    /// A two-pass EVP_PKEY operation: measure, then write.
    private func run(
        _ what: String, _ input: UnsafeRawBufferPointer,
        _ body: (OpaquePointer, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>, UnsafePointer<UInt8>?, Int)
            -> Int32
    ) throws -> [UInt8] {
        let bytes = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        var length = 0
        try checkedCall(what) { body(pointer, nil, &length, bytes, input.count) }
        var out = [UInt8](repeating: 0, count: length)
        try checkedCall(what) {
            out.withUnsafeMutableBufferPointer { body(pointer, $0.baseAddress, &length, bytes, input.count) }
        }
        out.removeSubrange(min(length, out.count)...)
        return out
    }

    /// The DER AlgorithmIdentifier the operation's settings make (a signature's
    /// `algorithm-id`, which X509_sign embeds).
    public func algorithmIdentifier() throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 256)
        var length = 0
        try buffer.withUnsafeMutableBytes { raw in
            var params = [
                // A static key: OSSL_PARAM keeps the pointer (a String would dangle).
                OSSL_PARAM_construct_octet_string(staticCString("algorithm-id"), raw.baseAddress, raw.count),
                OSSL_PARAM_construct_end(),
            ]
            try params.withUnsafeMutableBufferPointer { list in
                try checkedCall("reading the algorithm identifier") {
                    EVP_PKEY_CTX_get_params(pointer, list.baseAddress)
                }
                length = list[0].return_size
            }
        }
        guard length > 0, length <= buffer.count else {
            throw OpenSSLError(operation: "reading the algorithm identifier", reasons: ["none was given"])
        }
        return Array(buffer.prefix(length))
    }

    public var settableParameters: UnsafePointer<OSSL_PARAM>? { EVP_PKEY_CTX_settable_params(pointer) }
    public var gettableParameters: UnsafePointer<OSSL_PARAM>? { EVP_PKEY_CTX_gettable_params(pointer) }
}

/// A digest-and-verify operation run by the default provider (EVP_DigestVerify*).
public final class EVPDigestVerification {
    let pointer: OpaquePointer

    /// - Parameters:
    ///   - digest: the digest's name, or nil for the key type's default.
    ///   - parameters: the operation's parameters, applied at init as the application gave them.
    public init(
        digest: String?, properties: String?, key: EVPKey, context: CryptoContext,
        parameters: UnsafePointer<OSSL_PARAM>?
    ) throws {
        pointer = try checkedPointer("creating a verification") { EVP_MD_CTX_new() }
        do {
            try checkedCall("starting a verification with \(digest ?? "the default digest")") {
                EVP_DigestVerifyInit_ex(pointer, nil, digest, context.pointer, properties, key.pointer, parameters)
            }
        } catch {
            EVP_MD_CTX_free(pointer)
            throw error
        }
    }

    private init(copying other: EVPDigestVerification) throws {
        pointer = try checkedPointer("creating a verification") { EVP_MD_CTX_new() }
        do {
            try checkedCall("copying a verification") { EVP_MD_CTX_copy_ex(pointer, other.pointer) }
        } catch {
            EVP_MD_CTX_free(pointer)
            throw error
        }
    }

    deinit { EVP_MD_CTX_free(pointer) }

    public func copy() throws -> EVPDigestVerification { try EVPDigestVerification(copying: self) }

    public func update(_ bytes: UnsafeRawBufferPointer) throws {
        try checkedCall("hashing for a verification") {
            EVP_DigestVerifyUpdate(pointer, bytes.baseAddress, bytes.count)
        }
    }

    /// True when `signature` signs what was hashed; false when it does not (with OpenSSL's
    /// reason left on the queue).
    public func finish(signature: UnsafeRawBufferPointer) -> Bool {
        ERR_set_mark()
        let result = EVP_DigestVerifyFinal(
            pointer, signature.baseAddress?.assumingMemoryBound(to: UInt8.self), signature.count)
        if result == 1 { ERR_pop_to_mark() } else { ERR_clear_last_mark() }
        return result == 1
    }

    /// The key operation inside, which takes and answers the signature parameters.
    private var keyOperation: OpaquePointer? { EVP_MD_CTX_get_pkey_ctx(pointer) }

    public func setParameters(_ params: UnsafePointer<OSSL_PARAM>) throws {
        try checkedCall("setting verification parameters") { EVP_PKEY_CTX_set_params(keyOperation, params) }
    }

    public func getParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>) throws {
        try checkedCall("reading verification parameters") { EVP_PKEY_CTX_get_params(keyOperation, params) }
    }

    /// Parameters of the digest inside (EVP_MD_CTX_set_params).
    public func setDigestParameters(_ params: UnsafePointer<OSSL_PARAM>) throws {
        try checkedCall("setting digest parameters") { EVP_MD_CTX_set_params(pointer, params) }
    }

    public func getDigestParameters(_ params: UnsafeMutablePointer<OSSL_PARAM>) throws {
        try checkedCall("reading digest parameters") { EVP_MD_CTX_get_params(pointer, params) }
    }

    public var settableParameters: UnsafePointer<OSSL_PARAM>? { EVP_PKEY_CTX_settable_params(keyOperation) }
    public var gettableParameters: UnsafePointer<OSSL_PARAM>? { EVP_PKEY_CTX_gettable_params(keyOperation) }
}

// MARK: - Parameters and numbers

/// A BIGNUM, for the moment it takes to move a number between bytes and a parameter.
final class BigNumber {
    let pointer: OpaquePointer

    init(taking pointer: OpaquePointer) { self.pointer = pointer }

    init(bigEndian bytes: [UInt8]) throws {
        pointer = try checkedPointer("making a big number") { BN_bin2bn(bytes, Int32(bytes.count), nil) }
    }

    deinit { BN_free(pointer) }

    var bigEndian: [UInt8] {
        var out = [UInt8](repeating: 0, count: (Int(BN_num_bits(pointer)) + 7) / 8)
        if !out.isEmpty { _ = out.withUnsafeMutableBufferPointer { BN_bn2bin(pointer, $0.baseAddress) } }
        return out
    }
}

/// The value of a BIGNUM parameter as unsigned big-endian bytes; nil when the parameter
/// does not hold a non-negative integer.
public func bigEndianInteger(of parameter: UnsafePointer<OSSL_PARAM>) -> [UInt8]? {
    var number: OpaquePointer? = nil
    let ok = discardingOpenSSLErrors { OSSL_PARAM_get_BN(parameter, &number) == 1 }
    guard ok, let number else { return nil }
    return BigNumber(taking: number).bigEndian
}

/// Sets a BIGNUM parameter from unsigned big-endian bytes; false when the parameter does
/// not take it (another type, or too small a buffer).
public func setBigEndianInteger(_ bytes: [UInt8], in parameter: UnsafeMutablePointer<OSSL_PARAM>) -> Bool {
    guard let number = try? BigNumber(bigEndian: bytes) else { return false }
    return withExtendedLifetime(number) {
        discardingOpenSSLErrors { OSSL_PARAM_set_BN(parameter, number.pointer) == 1 }
    }
}

/// Builds a parameter list (OSSL_PARAM_BLD). Keys are static strings: OpenSSL keeps the
/// key pointers, not copies, in the list it builds.
public final class ParamBuilder {
    private let pointer: OpaquePointer
    /// What the builder points to until `build`: numbers and string copies.
    private var numbers: [BigNumber] = []
    private var buffers: [UnsafeMutableRawPointer] = []

    public init() throws {
        pointer = try checkedPointer("creating a parameter builder") { OSSL_PARAM_BLD_new() }
    }

    deinit {
        OSSL_PARAM_BLD_free(pointer)
        buffers.forEach { $0.deallocate() }
    }

    public func push(_ key: StaticString, bigEndian bytes: [UInt8]) throws {
        let number = try BigNumber(bigEndian: bytes)
        numbers.append(number)
        try checkedCall("adding parameter \(key)") {
            OSSL_PARAM_BLD_push_BN(pointer, staticCString(key), number.pointer)
        }
    }

    public func push(_ key: StaticString, int value: Int32) throws {
        try checkedCall("adding parameter \(key)") { OSSL_PARAM_BLD_push_int(pointer, staticCString(key), value) }
    }

    public func push(_ key: StaticString, string value: String) throws {
        let bytes = Array(value.utf8CString)
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 1)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        buffers.append(copy)
        try checkedCall("adding parameter \(key)") {
            OSSL_PARAM_BLD_push_utf8_string(
                pointer, staticCString(key), copy.assumingMemoryBound(to: CChar.self), bytes.count - 1)
        }
    }

    public func push(_ key: StaticString, octets value: [UInt8]) throws {
        let copy = UnsafeMutableRawPointer.allocate(byteCount: max(value.count, 1), alignment: 1)
        value.withUnsafeBytes { if let base = $0.baseAddress { copy.copyMemory(from: base, byteCount: value.count) } }
        buffers.append(copy)
        try checkedCall("adding parameter \(key)") {
            OSSL_PARAM_BLD_push_octet_string(pointer, staticCString(key), copy, value.count)
        }
    }

    /// The list, which owns copies of every value pushed.
    public func build() throws -> ParamList {
        ParamList(taking: try checkedPointerParams("building a parameter list") { OSSL_PARAM_BLD_to_param(pointer) })
    }

    private func checkedPointerParams(
        _ what: String, _ call: () -> UnsafeMutablePointer<OSSL_PARAM>?
    ) throws -> UnsafeMutablePointer<OSSL_PARAM> {
        ERR_set_mark()
        if let list = call() {
            ERR_pop_to_mark()
            return list
        }
        ERR_clear_last_mark()
        throw OpenSSLError(operation: what, reasons: newestOpenSSLError().map { [$0] } ?? [])
    }
}

/// A parameter list made by `ParamBuilder` (freed with OSSL_PARAM_free).
public final class ParamList {
    let pointer: UnsafeMutablePointer<OSSL_PARAM>

    init(taking pointer: UnsafeMutablePointer<OSSL_PARAM>) { self.pointer = pointer }

    deinit { OSSL_PARAM_free(pointer) }

    /// Calls `body` with the list, which lives at least until `body` returns (a bare
    /// pointer read from it may outlive the list itself).
    public func withUnsafePointer<R>(_ body: (UnsafeMutablePointer<OSSL_PARAM>) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(pointer) }
    }
}
