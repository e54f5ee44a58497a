// AES-256-GCM for the node's encryption at rest, and AES key wrap with padding
// (RFC 5649) for moving keys in and out of the HSM.

import COpenSSL

/// AES-256-GCM with a random 12-byte nonce: `nonce || ciphertext || tag(16)`.
public enum AESGCM {
    static let nonceLength = 12
    static let tagLength = 16

    /// Encrypts and authenticates `plaintext`, binding `additionalData` to it.
    public static func seal(
        plaintext: [UInt8], key: [UInt8], additionalData: [UInt8] = [], context: CryptoContext
    ) throws -> [UInt8] {
        guard key.count == 32 else { throw CryptoError.invalidArgument("AES-256-GCM needs a 32-byte key") }
        let nonce = try SecureRandom.bytes(nonceLength, context: context)
        let cipher = try OwnedCipherContext(cipherName: "AES-256-GCM", context: context)
        try cipher.initialize(encrypting: true, key: key, iv: nonce)
        try cipher.addAuthenticatedData(additionalData)
        var out = nonce
        out += try cipher.update(plaintext)
        out += try cipher.finish()
        out += try cipher.tag(length: tagLength)
        return out
    }

    /// Checks and decrypts what `seal` made.
    ///
    /// - Throws: `CryptoError.authenticationFailed` when anything was altered or the key
    ///   or additional data differ.
    public static func open(
        _ sealed: [UInt8], key: [UInt8], additionalData: [UInt8] = [], context: CryptoContext
    ) throws -> [UInt8] {
        guard key.count == 32 else { throw CryptoError.invalidArgument("AES-256-GCM needs a 32-byte key") }
        guard sealed.count >= nonceLength + tagLength else { throw CryptoError.authenticationFailed }
        let nonce = Array(sealed[0..<nonceLength])
        let ciphertext = Array(sealed[nonceLength..<(sealed.count - tagLength)])
        let tag = Array(sealed[(sealed.count - tagLength)...])
        let cipher = try OwnedCipherContext(cipherName: "AES-256-GCM", context: context)
        try cipher.initialize(encrypting: false, key: key, iv: nonce)
        try cipher.addAuthenticatedData(additionalData)
        var plaintext = try cipher.update(ciphertext)
        try cipher.setExpectedTag(tag)
        do {
            plaintext += try cipher.finish()
        } catch {
            clearOpenSSLErrors()
            throw CryptoError.authenticationFailed
        }
        return plaintext
    }
}

/// AES key wrap with padding (RFC 5649), with AES-128, -192 or -256 chosen by the
/// wrapping key's length.
public enum AESKeyWrap {
    static func cipherName(kekLength: Int) throws -> String {
        switch kekLength {
        case 16: return "AES-128-WRAP-PAD"
        case 24: return "AES-192-WRAP-PAD"
        case 32: return "AES-256-WRAP-PAD"
        default: throw CryptoError.invalidArgument("a wrapping key must be 16, 24 or 32 bytes, not \(kekLength)")
        }
    }

    /// Wraps `key` (any length from 1 byte) under `kek`.
    public static func wrap(key: [UInt8], kek: [UInt8], context: CryptoContext) throws -> [UInt8] {
        guard !key.isEmpty else { throw CryptoError.invalidArgument("nothing to wrap") }
        let cipher = try OwnedCipherContext(cipherName: cipherName(kekLength: kek.count), context: context)
        try cipher.initialize(encrypting: true, key: kek, iv: nil)
        var out = try cipher.update(key, extraCapacity: 16)
        out += try cipher.finish()
        return out
    }

    /// Unwraps what `wrap` made.
    ///
    /// - Throws: `CryptoError.unwrapFailed` when the integrity check fails (wrong key or
    ///   altered data).
    public static func unwrap(wrappedKey: [UInt8], kek: [UInt8], context: CryptoContext) throws -> [UInt8] {
        let cipher = try OwnedCipherContext(cipherName: cipherName(kekLength: kek.count), context: context)
        guard wrappedKey.count >= 16, wrappedKey.count % 8 == 0 else { throw CryptoError.unwrapFailed }
        try cipher.initialize(encrypting: false, key: kek, iv: nil)
        do {
            var out = try cipher.update(wrappedKey, extraCapacity: 16)
            out += try cipher.finish()
            return out
        } catch {
            clearOpenSSLErrors()
            throw CryptoError.unwrapFailed
        }
    }
}

extension OwnedCipherContext {
    func initialize(encrypting: Bool, key: [UInt8], iv: [UInt8]?) throws {
        // Wrap modes refuse to start without this flag; it is harmless for the others.
        EVP_CIPHER_CTX_set_flags(pointer, Int32(EVP_CIPHER_CTX_FLAG_WRAP_ALLOW))
        let result = key.withUnsafeBufferPointer { keyBuffer in
            withOptionalBuffer(iv) { ivBuffer in
                EVP_CipherInit_ex2(pointer, cipher, keyBuffer.baseAddress, ivBuffer, encrypting ? 1 : 0, nil)
            }
        }
        guard result == 1 else { throw OpenSSLError.capture("starting the cipher") }
    }

    func addAuthenticatedData(_ data: [UInt8]) throws {
        guard !data.isEmpty else { return }
        var outLength: Int32 = 0
        let result = data.withUnsafeBufferPointer {
            EVP_CipherUpdate(pointer, nil, &outLength, $0.baseAddress, Int32($0.count))
        }
        guard result == 1 else { throw OpenSSLError.capture("adding authenticated data") }
    }

    func update(_ data: [UInt8], extraCapacity: Int = 32) throws -> [UInt8] {
        guard !data.isEmpty else { return [] }
        guard data.count < Int(Int32.max) - extraCapacity else { throw CryptoError.invalidArgument("input too long") }
        var out = [UInt8](repeating: 0, count: data.count + extraCapacity)
        var outLength: Int32 = 0
        let result = out.withUnsafeMutableBufferPointer { outBuffer in
            data.withUnsafeBufferPointer {
                EVP_CipherUpdate(pointer, outBuffer.baseAddress, &outLength, $0.baseAddress, Int32($0.count))
            }
        }
        guard result == 1 else { throw OpenSSLError.capture("running the cipher") }
        out.removeSubrange(Int(outLength)...)
        return out
    }

    func finish() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: Int32 = 0
        let result = out.withUnsafeMutableBufferPointer { EVP_CipherFinal_ex(pointer, $0.baseAddress, &outLength) }
        guard result == 1 else { throw OpenSSLError.capture("finishing the cipher") }
        out.removeSubrange(Int(outLength)...)
        return out
    }

    func tag(length: Int) throws -> [UInt8] {
        var tag = [UInt8](repeating: 0, count: length)
        let result = tag.withUnsafeMutableBufferPointer {
            EVP_CIPHER_CTX_ctrl(pointer, EVP_CTRL_AEAD_GET_TAG, Int32(length), $0.baseAddress)
        }
        guard result == 1 else { throw OpenSSLError.capture("reading the GCM tag") }
        return tag
    }

    func setExpectedTag(_ tag: [UInt8]) throws {
        var tag = tag
        let result = tag.withUnsafeMutableBufferPointer {
            EVP_CIPHER_CTX_ctrl(pointer, EVP_CTRL_AEAD_SET_TAG, Int32($0.count), $0.baseAddress)
        }
        guard result == 1 else { throw OpenSSLError.capture("setting the GCM tag") }
    }
}

/// Calls `body` with a pointer to `bytes`, or nil when there are none.
private func withOptionalBuffer<R>(_ bytes: [UInt8]?, _ body: (UnsafePointer<UInt8>?) -> R) -> R {
    guard let bytes else { return body(nil) }
    return bytes.withUnsafeBufferPointer { body($0.baseAddress) }
}
