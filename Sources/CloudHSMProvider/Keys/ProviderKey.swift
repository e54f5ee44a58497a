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
    /// The type's public parameters (RSA: n and e; EC: group and pub), read once.
    let publicParameters: [ParamValue]
    /// The type's domain parameters (EC: group, encoding, point format; RSA: none).
    let domainParameters: [ParamValue]
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
            domainParameters = try type.domainParameterValues(of: publicKey)
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

    /// A public parameter as bytes (EC's "pub"); empty when absent.
    func octets(_ key: StaticString) -> [UInt8] {
        for case .octets(let name, let value) in publicParameters where name.description == key.description {
            return value
        }
        return []
    }

    func hasSamePublicKey(as other: ProviderKey) -> Bool {
        type == other.type && publicParameters == other.publicParameters
    }
}

/// The keydata OpenSSL holds for a keymgmt: the key's type from `new` on, then what was
/// loaded, imported or generated into it: a key, domain parameters alone (EC's group), or
/// a key pair whose generation waits for its first use. Filled in once, before OpenSSL
/// shares the keydata between threads.
final class KeyHolder {
    let type: any ProviderKeyType.Type
    var key: ProviderKey?
    /// Domain parameters without a key: a parameter import or generation.
    var parameters: DomainParameters?
    /// A key pair the HSMs make when it is first used.
    var deferred: DeferredKey?

    init(_ type: any ProviderKeyType.Type, _ key: ProviderKey? = nil) {
        self.type = type
        self.key = key
    }

    /// A holder with the same content: duplicates share a deferred key, so it is made once.
    func duplicate() -> KeyHolder {
        let twin = KeyHolder(type, key)
        twin.parameters = parameters
        twin.deferred = deferred
        return twin
    }

    /// The key, made in the HSMs first if its generation was deferred; nil when the holder
    /// has none (empty, or domain parameters only).
    func currentKey() throws -> ProviderKey? {
        if let key { return key }
        return try deferred?.key()
    }

    /// Whether a key pair is there or promised.
    var hasKeyPair: Bool { key?.isHSMKey == true || deferred != nil }

    /// The domain parameters of whatever the holder holds, as export gives them; empty when
    /// it holds nothing or its type has none.
    var domainParameterValues: [ParamValue] {
        key?.domainParameters ?? parameters?.values ?? deferred?.parameters.values ?? []
    }

    /// The domain parameters alone, without making a deferred key.
    var domainParameters: DomainParameters? { parameters ?? deferred?.parameters }

    /// The key behind keydata OpenSSL passes to an operation.
    static func key(_ keydata: UnsafeRawPointer?) throws -> ProviderKey {
        let holder = try provided(keydata, as: KeyHolder.self)
        guard let key = try holder.currentKey() else {
            if holder.parameters != nil {
                throw ProviderError(
                    .invalidInput, "this \(holder.type.displayName) key object holds domain parameters only, no key")
            }
            throw ProviderError(.invalidInput, "the key object is empty: nothing was loaded or imported into it")
        }
        return key
    }
}

/// Domain parameters held without a key (EC's group): a parameters-only key in the
/// provider's private library context answers sizes and the parameters' own questions.
final class DomainParameters {
    let type: any ProviderKeyType.Type
    let key: EVPKey
    /// As export hands them out, read back from `key` (so "P-256" reads "prime256v1").
    let values: [ParamValue]

    init(type: any ProviderKeyType.Type, values: [ParamValue]) throws {
        self.type = type
        let library = try runtime.library()
        do {
            key = try EVPKey(algorithm: type.name, domainParameters: parameterList(values), context: library.context)
            self.values = try type.domainParameterValues(of: key)
        } catch {
            throw ProviderError(error, doing: "reading \(type.displayName) domain parameters \(values)")
        }
    }
}

/// A key pair generated through OpenSSL, made in the HSMs only when the key is first used
/// (its public key, its key file, a signature). OpenSSL's `ecparam -genkey` generates a
/// whole key only to carry the curve to the real generation; the HSMs make one key, not two.
final class DeferredKey {
    let parameters: DomainParameters
    private let generation: any KeyGeneration
    private let made = Mutex<ProviderKey?>(nil)

    init(parameters: DomainParameters, generation: any KeyGeneration) {
        self.parameters = parameters
        self.generation = generation
    }

    /// The key, made in the HSMs on the first call; a failed attempt is tried again next time.
    func key() throws -> ProviderKey {
        try made.withLock { slot in
            if let existing = slot { return existing }
            let type = parameters.type
            let reference = try generation.generate(with: runtime.keys)
            let key = try ProviderKey(reference: reference)
            guard key.type == type else {
                throw ProviderError(
                    .hsmOperationFailed,
                    "the HSMs made \(key.type.displayName) key \(reference.handle), not \(type.displayName)")
            }
            trace("generated \(type.displayName) key handle \(reference.handle) on its first use")
            slot = key
            return key
        }
    }
}
