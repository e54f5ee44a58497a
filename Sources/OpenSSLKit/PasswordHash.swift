// Slow, salted password hashing for the node's users: PBKDF2-HMAC-SHA256 (RFC 8018)
// built on the library context's HMAC. COpenSSL's shim does not include <openssl/kdf.h>,
// and EVP_MAC gives the same result without a shared-header change.

import COpenSSL

public enum PasswordHash {
    static let hashLength = 32

    /// Derives `length` bytes from `password` and `salt`.
    public static func pbkdf2SHA256(
        password: [UInt8], salt: [UInt8], iterations: Int, length: Int, context: CryptoContext
    ) throws -> [UInt8] {
        guard iterations >= 1 else { throw CryptoError.invalidArgument("PBKDF2 needs at least one iteration") }
        guard length >= 1, length <= 1024 else { throw CryptoError.invalidArgument("PBKDF2 output length \(length)") }
        let mac = try KeyedHMAC(key: password, context: context)
        var out: [UInt8] = []
        out.reserveCapacity(length + hashLength)
        var block: UInt32 = 1
        while out.count < length {
            let index: [UInt8] = [
                UInt8(block >> 24), UInt8(block >> 16 & 0xff), UInt8(block >> 8 & 0xff), UInt8(block & 0xff),
            ]
            var u = try mac.authenticate(salt + index)
            var t = u
            // The inner loop runs 100,000 times per login: no allocation in it.
            try u.withUnsafeMutableBufferPointer { uBuffer in
                try t.withUnsafeMutableBufferPointer { tBuffer in
                    for _ in 1..<max(iterations, 1) {
                        try mac.authenticateInPlace(uBuffer)
                        for i in 0..<hashLength { tBuffer[i] ^= uBuffer[i] }
                    }
                }
            }
            out += t
            block += 1
        }
        return Array(out.prefix(length))
    }
}

/// An HMAC-SHA256 context keyed once; each `authenticate` restarts it with the same key,
/// which OpenSSL does without re-hashing the key.
final class KeyedHMAC {
    private let mac: OpaquePointer
    private let pointer: OpaquePointer

    init(key: [UInt8], context: CryptoContext) throws {
        guard let mac = EVP_MAC_fetch(context.pointer, "HMAC", nil) else { throw OpenSSLError.capture("fetching HMAC") }
        guard let pointer = EVP_MAC_CTX_new(mac) else {
            EVP_MAC_free(mac)
            throw OpenSSLError.capture("creating an HMAC context")
        }
        self.mac = mac
        self.pointer = pointer
        // OSSL_PARAM keeps pointers, not copies: the key is a static string and the
        // value buffer outlives the init call.
        var digestName = Array("SHA256".utf8CString)
        // An empty key has no address, so it gets one spare byte and length 0.
        let keyCount = key.count
        var key = key + [0]
        let result = digestName.withUnsafeMutableBufferPointer { name in
            key.withUnsafeBufferPointer { keyBuffer in
                var params = [
                    OSSL_PARAM_construct_utf8_string(staticKey("digest"), name.baseAddress, 0),
                    OSSL_PARAM_construct_end(),
                ]
                return EVP_MAC_init(pointer, keyBuffer.baseAddress, keyCount, &params)
            }
        }
        key.withUnsafeMutableBytes { OPENSSL_cleanse($0.baseAddress, $0.count) }
        guard result == 1 else { throw OpenSSLError.capture("keying HMAC") }
    }

    deinit {
        EVP_MAC_CTX_free(pointer)
        EVP_MAC_free(mac)
    }

    /// Replaces the 32 bytes in `buffer` with their HMAC.
    func authenticateInPlace(_ buffer: UnsafeMutableBufferPointer<UInt8>) throws {
        guard buffer.count == PasswordHash.hashLength else { throw CryptoError.invalidArgument("HMAC block size") }
        guard EVP_MAC_init(pointer, nil, 0, nil) == 1,
            EVP_MAC_update(pointer, buffer.baseAddress, buffer.count) == 1
        else { throw OpenSSLError.capture("running HMAC") }
        var length = 0
        guard EVP_MAC_final(pointer, buffer.baseAddress, &length, buffer.count) == 1, length == buffer.count else {
            throw OpenSSLError.capture("finishing HMAC")
        }
    }

    func authenticate(_ data: [UInt8]) throws -> [UInt8] {
        guard EVP_MAC_init(pointer, nil, 0, nil) == 1 else { throw OpenSSLError.capture("restarting HMAC") }
        let updated = data.withUnsafeBufferPointer { EVP_MAC_update(pointer, $0.baseAddress, $0.count) }
        guard updated == 1 else { throw OpenSSLError.capture("running HMAC") }
        var out = [UInt8](repeating: 0, count: PasswordHash.hashLength)
        var length = 0
        let finished = out.withUnsafeMutableBufferPointer { EVP_MAC_final(pointer, $0.baseAddress, &length, $0.count) }
        guard finished == 1, length == PasswordHash.hashLength else { throw OpenSSLError.capture("finishing HMAC") }
        return out
    }
}

/// A C string key for OSSL_PARAM that lives as long as the program (a literal).
func staticKey(_ key: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(key.utf8Start).assumingMemoryBound(to: CChar.self)
}
