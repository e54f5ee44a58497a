// The provider's key object, for every key type: the public key held locally (sizes,
// matching, export, verification and encryption) and, for HSM keys, the reference to the
// private key inside the cluster. A public-only key is what OpenSSL imports into us from
// another provider (a certificate's key, when ?provider=cloudhsm prefers us).

import CloudHSMCore
import OpenSSLKit
import Synchronization

final class ProviderKey {
    let type: any ProviderKeyType.Type
    /// The public key in the provider's private library context (default provider).
    let publicKey: EVPKey
    /// nil for a public-only key.
    let reference: KeyReference?
    let publicKeyInfo: [UInt8]
    /// The type's public parameters (RSA: n and e), read once.
    let publicParameters: [ParamValue]
    let bits: Int
    /// The largest signature or ciphertext, in bytes.
    let size: Int
    let securityBits: Int
    /// The process that last confirmed the handle still holds this public key, as its fork
    /// generation plus one (0: never); a forked child confirms again.
    let confirmedInProcess = Atomic<UInt64>(0)

    var isHSMKey: Bool { reference != nil }

    /// A key named by a fake PEM; its type is the type of the public key the file holds.
    convenience init(reference: KeyReference) throws {
        let library = try runtime.library()
        let publicKey: EVPKey
        do {
            publicKey = try EVPKey(publicKeyInfo: reference.publicKeyInfo, context: library.context)
        } catch {
            throw ProviderError(.malformedKeyReference, "the key reference's public key is not a valid public key")
        }
        try self.init(type: Algorithms.keyType(of: publicKey), publicKey: publicKey, reference: reference)
    }

    /// A public-only key of `type` from its public parameters.
    convenience init(type: any ProviderKeyType.Type, importing values: [ParamValue]) throws {
        let library = try runtime.library()
        let publicKey: EVPKey
        do {
            publicKey = try EVPKey(
                algorithm: type.name, publicParameters: parameterList(values), context: library.context)
        } catch {
            throw ProviderError(error, doing: "importing \(type.displayName) public key parameters")
        }
        try self.init(type: type, publicKey: publicKey, reference: nil)
    }

    /// The public half alone: what a store hands out when a public key is expected.
    func publicHalf() throws -> ProviderKey {
        try ProviderKey(type: type, publicKey: publicKey, reference: nil)
    }

    private init(type: any ProviderKeyType.Type, publicKey: EVPKey, reference: KeyReference?) throws {
        guard publicKey.isA(type.name.description) else {
            throw ProviderError(
                .malformedKeyReference, "the public key is \(publicKey.typeName), not \(type.displayName)")
        }
        self.type = type
        self.publicKey = publicKey
        self.reference = reference
        do {
            publicKeyInfo = try publicKey.publicKeyInfo()
            publicParameters = try type.publicParameters(of: publicKey)
        } catch {
            throw ProviderError(error, doing: "reading the \(type.displayName) public key")
        }
        bits = publicKey.bits
        size = publicKey.size
        securityBits = publicKey.securityBits
    }

    /// A public parameter as unsigned big-endian bytes (RSA's "n"); empty when absent.
    func bigNumber(_ key: StaticString) -> [UInt8] {
        for case .bigNumber(let name, let value) in publicParameters where name.description == key.description {
            return value
        }
        return []
    }

    func hasSamePublicKey(as other: ProviderKey) -> Bool {
        type == other.type && publicParameters == other.publicParameters
    }
}

/// The keydata OpenSSL holds for a keymgmt: the key's type from `new` on, the key itself
/// once loaded, imported or generated.
final class KeyHolder {
    let type: any ProviderKeyType.Type
    var key: ProviderKey?

    init(_ type: any ProviderKeyType.Type, _ key: ProviderKey? = nil) {
        self.type = type
        self.key = key
    }

    /// The key behind keydata OpenSSL passes to an operation.
    static func key(_ keydata: UnsafeRawPointer?) throws -> ProviderKey {
        guard let key = try provided(keydata, as: KeyHolder.self).key else {
            throw ProviderError(.invalidInput, "the key object is empty: nothing was loaded or imported into it")
        }
        return key
    }
}
