// Owners for the libcrypto objects the crypto files use. Each class takes ownership of
// one pointer in init and frees it in deinit, so no path can leak or double-free it.

import COpenSSL

/// A crypto failure that is not simply "OpenSSL said no": bad sizes, wrong key kinds,
/// undecodable files, failed authentication.
public enum CryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidArgument(String)
    case invalidKeyData(String)
    case authenticationFailed
    case unwrapFailed
    case decryptFailed

    public var description: String {
        switch self {
        case .invalidArgument(let why): return "invalid argument: \(why)"
        case .invalidKeyData(let why): return "invalid key data: \(why)"
        case .authenticationFailed: return "authentication failed: the data or its tag was altered or the key is wrong"
        case .unwrapFailed: return "unwrap failed: the wrapped data does not match the wrapping key"
        case .decryptFailed: return "decryption failed"
        }
    }
}

/// Empties this thread's OpenSSL error queue after an expected failure, so a stale
/// reason does not show up in a later, unrelated error.
func clearOpenSSLErrors() {
    ERR_clear_error()
}

/// An `EVP_PKEY`. OpenSSL refcounts keys and allows concurrent operations on one key
/// as long as each uses its own `EVP_PKEY_CTX`.
final class OwnedPKey {
    let pointer: OpaquePointer

    init(taking pointer: OpaquePointer) { self.pointer = pointer }

    deinit { EVP_PKEY_free(pointer) }

    var bits: Int { Int(EVP_PKEY_get_bits(pointer)) }
    var size: Int { Int(EVP_PKEY_get_size(pointer)) }
    func isA(_ name: String) -> Bool { EVP_PKEY_is_a(pointer, name) == 1 }

    /// DER SubjectPublicKeyInfo.
    func publicKeyInfo() throws -> [UInt8] {
        let length = i2d_PUBKEY(pointer, nil)
        guard length > 0 else { throw OpenSSLError.capture("measuring the public key") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_PUBKEY(pointer, &cursor)
        }
        guard written == length else { throw OpenSSLError.capture("encoding the public key") }
        return out
    }

    /// A big-number parameter ("n", "e") as unsigned big-endian bytes.
    func bigNumberParameter(_ name: String) throws -> [UInt8] {
        var number: OpaquePointer? = nil
        guard EVP_PKEY_get_bn_param(pointer, name, &number) == 1, let number else {
            throw OpenSSLError.capture("reading key parameter \(name)")
        }
        defer { BN_free(number) }
        let count = (Int(BN_num_bits(number)) + 7) / 8
        var out = [UInt8](repeating: 0, count: count)
        if count > 0 {
            _ = out.withUnsafeMutableBufferPointer { BN_bn2bin(number, $0.baseAddress) }
        }
        return out
    }
}

/// An `EVP_PKEY_CTX`: one operation on one key, used by one thread.
final class OwnedPKeyContext {
    let pointer: OpaquePointer

    init(key: OwnedPKey, context: CryptoContext) throws {
        guard let pointer = EVP_PKEY_CTX_new_from_pkey(context.pointer, key.pointer, nil) else {
            throw OpenSSLError.capture("creating a key operation")
        }
        self.pointer = pointer
    }

    init(algorithm: String, context: CryptoContext) throws {
        guard let pointer = EVP_PKEY_CTX_new_from_name(context.pointer, algorithm, nil) else {
            throw OpenSSLError.capture("creating a \(algorithm) key operation")
        }
        self.pointer = pointer
    }

    deinit { EVP_PKEY_CTX_free(pointer) }

    func check(_ result: Int32, _ what: String) throws {
        guard result > 0 else { throw OpenSSLError.capture(what) }
    }

    func setPadding(_ padding: Int32) throws {
        try check(EVP_PKEY_CTX_set_rsa_padding(pointer, padding), "setting the RSA padding")
    }

    func setSignatureDigest(_ digest: FetchedDigest) throws {
        try check(EVP_PKEY_CTX_set_signature_md(pointer, digest.pointer), "setting the signature digest")
    }

    func setMGF1Digest(_ digest: FetchedDigest) throws {
        try check(EVP_PKEY_CTX_set_rsa_mgf1_md(pointer, digest.pointer), "setting the MGF1 digest")
    }

    func setPSSSaltLength(_ length: Int32) throws {
        try check(EVP_PKEY_CTX_set_rsa_pss_saltlen(pointer, length), "setting the PSS salt length")
    }

    func setOAEPDigest(_ digest: FetchedDigest) throws {
        try check(EVP_PKEY_CTX_set_rsa_oaep_md(pointer, digest.pointer), "setting the OAEP digest")
    }

    /// OpenSSL takes ownership of the label, so it gets its own OpenSSL-allocated copy.
    func setOAEPLabel(_ label: [UInt8]) throws {
        guard !label.isEmpty else { return }
        guard let copy = label.withUnsafeBytes({ CRYPTO_memdup($0.baseAddress, $0.count, nil, 0) }) else {
            throw OpenSSLError.capture("copying the OAEP label")
        }
        guard EVP_PKEY_CTX_set0_rsa_oaep_label(pointer, copy, Int32(label.count)) > 0 else {
            CRYPTO_free(copy, nil, 0)
            throw OpenSSLError.capture("setting the OAEP label")
        }
    }

    /// Runs a two-pass EVP_PKEY operation (sign, decrypt, encrypt): the first call with
    /// no output buffer measures, the second writes.
    func run(
        _ input: [UInt8], _ what: String,
        _ body: (OpaquePointer, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<Int>, UnsafePointer<UInt8>?, Int)
            -> Int32
    ) throws -> [UInt8] {
        try input.withUnsafeBufferPointer { inBuffer -> [UInt8] in
            var length = 0
            guard body(pointer, nil, &length, inBuffer.baseAddress, inBuffer.count) > 0 else {
                throw OpenSSLError.capture(what)
            }
            var out = [UInt8](repeating: 0, count: length)
            let result = out.withUnsafeMutableBufferPointer {
                body(pointer, $0.baseAddress, &length, inBuffer.baseAddress, inBuffer.count)
            }
            guard result > 0 else { throw OpenSSLError.capture(what) }
            out.removeSubrange(min(length, out.count)...)
            return out
        }
    }
}

/// A digest fetched once from a library context.
final class FetchedDigest {
    let pointer: OpaquePointer

    init(name: String, context: CryptoContext) throws {
        guard let pointer = EVP_MD_fetch(context.pointer, name, nil) else {
            throw OpenSSLError.capture("fetching digest \(name)")
        }
        self.pointer = pointer
    }

    deinit { EVP_MD_free(pointer) }
}

/// A symmetric cipher fetched from a library context, with one cipher context.
final class OwnedCipherContext {
    let cipher: OpaquePointer
    let pointer: OpaquePointer

    init(cipherName: String, context: CryptoContext) throws {
        guard let cipher = EVP_CIPHER_fetch(context.pointer, cipherName, nil) else {
            throw OpenSSLError.capture("fetching cipher \(cipherName)")
        }
        guard let pointer = EVP_CIPHER_CTX_new() else {
            EVP_CIPHER_free(cipher)
            throw OpenSSLError.capture("creating a cipher context")
        }
        self.cipher = cipher
        self.pointer = pointer
    }

    deinit {
        EVP_CIPHER_CTX_free(pointer)
        EVP_CIPHER_free(cipher)
    }
}

/// A memory BIO, for reading and writing PEM.
final class OwnedMemoryBIO {
    let pointer: OpaquePointer

    init() throws {
        guard let pointer = BIO_new(BIO_s_mem()) else { throw OpenSSLError.capture("creating a memory buffer") }
        self.pointer = pointer
    }

    /// A read-only BIO over a copy of `bytes`.
    init(contents bytes: [UInt8]) throws {
        guard
            let pointer = bytes.withUnsafeBytes({ buffer -> OpaquePointer? in
                guard let bio = BIO_new(BIO_s_mem()) else { return nil }
                if buffer.count > 0, BIO_write(bio, buffer.baseAddress, Int32(buffer.count)) != Int32(buffer.count) {
                    BIO_free(bio)
                    return nil
                }
                return bio
            })
        else { throw OpenSSLError.capture("creating a memory buffer") }
        self.pointer = pointer
    }

    deinit { BIO_free(pointer) }

    var contents: [UInt8] {
        var data: UnsafeMutablePointer<CChar>? = nil
        let count = cshim_BIO_get_mem_data(pointer, &data)
        guard count > 0, let data else { return [] }
        return data.withMemoryRebound(to: UInt8.self, capacity: Int(count)) {
            Array(UnsafeBufferPointer(start: $0, count: Int(count)))
        }
    }
}

/// Runs a d2i decoder over all of `der`: nil when it fails or leaves bytes unread, so
/// trailing garbage after a valid key is refused rather than ignored.
func decodeWhole(
    _ der: [UInt8], _ decode: (UnsafeMutablePointer<UnsafePointer<UInt8>?>, Int) -> OpaquePointer?
) -> OpaquePointer? {
    der.withUnsafeBufferPointer { buffer in
        var cursor = buffer.baseAddress
        guard let key = decode(&cursor, buffer.count) else { return nil }
        if let base = buffer.baseAddress, let cursor, cursor - base != buffer.count {
            EVP_PKEY_free(key)
            return nil
        }
        return key
    }
}
