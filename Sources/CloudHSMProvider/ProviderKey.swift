// The provider's key object: an RSA public key held locally (for size questions, matching,
// export of n and e, verification and encryption) and, for HSM keys, the reference to
// the private key inside the cluster. A public-only key is what OpenSSL imports into us
// from another provider (a certificate's key, when ?provider=cloudhsm prefers us).

import COpenSSL
import CloudHSMCore
import Synchronization

final class ProviderKey {
    /// The public key as a default-provider EVP_PKEY in the provider's own library context.
    let publicKey: OpaquePointer
    /// nil for a public-only key.
    let reference: KeyReference?
    let publicKeyInfo: [UInt8]
    let modulus: [UInt8]
    let publicExponent: [UInt8]
    let bits: Int
    let size: Int
    let securityBits: Int
    /// The process that last confirmed the handle still holds this public key.
    let confirmedInProcess = Atomic<Int32>(0)

    var isHSMKey: Bool { reference != nil }

    private init(taking key: OpaquePointer, reference: KeyReference?) throws {
        guard EVP_PKEY_is_a(key, "RSA") == 1 else {
            EVP_PKEY_free(key)
            throw ProviderError(.malformedKeyReference, "the public key is not an RSA key")
        }
        publicKey = key
        self.reference = reference
        bits = Int(EVP_PKEY_get_bits(key))
        size = Int(EVP_PKEY_get_size(key))
        securityBits = Int(EVP_PKEY_get_security_bits(key))
        modulus = Self.bigNumber(key, "n")
        publicExponent = Self.bigNumber(key, "e")
        var derPointer: UnsafeMutablePointer<UInt8>?
        let length = i2d_PUBKEY(key, &derPointer)
        if length > 0, let derPointer {
            publicKeyInfo = Array(UnsafeBufferPointer(start: derPointer, count: Int(length)))
            CRYPTO_free(derPointer, #fileID, #line)
        } else {
            publicKeyInfo = []
        }
    }

    deinit { EVP_PKEY_free(publicKey) }

    /// A key named by a fake PEM.
    convenience init(reference: KeyReference, library: OpaquePointer) throws {
        ERR_set_mark()
        let parsed: OpaquePointer? = reference.publicKeyInfo.withUnsafeBufferPointer { buffer in
            var cursor = buffer.baseAddress
            return d2i_PUBKEY_ex(nil, &cursor, buffer.count, library, nil)
        }
        ERR_pop_to_mark()
        guard let parsed else {
            throw ProviderError(.malformedKeyReference, "the key reference's public key is not a valid RSA public key")
        }
        try self.init(taking: parsed, reference: reference)
    }

    /// A public-only key from its modulus and exponent (big-endian).
    convenience init(modulus: [UInt8], publicExponent: [UInt8], library: OpaquePointer) throws {
        guard let context = EVP_PKEY_CTX_new_from_name(library, "RSA", nil) else {
            throw ProviderError(.unsupported, "RSA is not available in the provider's library context")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        ERR_set_mark()
        defer { ERR_pop_to_mark() }
        let ok = withBigNumberParams([("n", modulus), ("e", publicExponent)]) { params in
            EVP_PKEY_fromdata_init(context) == 1
                && EVP_PKEY_fromdata(context, &key, cshim_EVP_PKEY_PUBLIC_KEY(), params) == 1
        }
        guard ok, let key else { throw ProviderError(.invalidInput, "not a valid RSA public key") }
        try self.init(taking: key, reference: nil)
    }

    func hasSamePublicKey(as other: ProviderKey) -> Bool {
        modulus == other.modulus && publicExponent == other.publicExponent
    }

    private static func bigNumber(_ key: OpaquePointer, _ name: String) -> [UInt8] {
        var bn: OpaquePointer?
        guard EVP_PKEY_get_bn_param(key, name, &bn) == 1, let bn else { return [] }
        defer { BN_free(bn) }
        var bytes = [UInt8](repeating: 0, count: Int((BN_num_bits(bn) + 7) / 8))
        _ = BN_bn2bin(bn, &bytes)
        return bytes
    }
}

/// Builds BIGNUM parameters for EVP_PKEY_fromdata.
private func withBigNumberParams(
    _ values: [(StaticString, [UInt8])], _ body: (UnsafeMutablePointer<OSSL_PARAM>) -> Bool
)
    -> Bool
{
    guard let builder = OSSL_PARAM_BLD_new() else { return false }
    defer { OSSL_PARAM_BLD_free(builder) }
    var numbers: [OpaquePointer] = []
    defer { numbers.forEach { BN_free($0) } }
    for (key, bytes) in values {
        guard let bn = BN_bin2bn(bytes, Int32(bytes.count), nil) else { return false }
        numbers.append(bn)
        guard OSSL_PARAM_BLD_push_BN(builder, cString(key), bn) == 1 else { return false }
    }
    guard let params = OSSL_PARAM_BLD_to_param(builder) else { return false }
    defer { OSSL_PARAM_free(params) }
    return body(params)
}
