// A key object ready for use: its attributes and its material already decrypted and
// parsed, so an operation never touches the store or re-parses a key.

import CloudHSMCore
import OpenSSLKit

enum KeyMaterial {
    /// AES or generic secret bytes.
    case secret([UInt8])
    case rsaPrivate(RSAPrivateKey)
    /// The public half lives in the attributes' SubjectPublicKeyInfo.
    case rsaPublic
    case ecPrivate(ECPrivateKey)
    /// The public half lives in the attributes' SubjectPublicKeyInfo.
    case ecPublic
}

/// Immutable once made; a change makes a new object.
final class KeyObject: @unchecked Sendable {
    // Every stored property is a constant and RSA/ECPrivateKey are thread-safe, so sharing
    // objects between connection and worker threads is safe.
    let attributes: KeyAttributes
    let material: KeyMaterial
    /// The store record's version (0 for session keys).
    let version: UInt64
    /// The session that owns a session key; nil for token keys.
    let sessionID: UInt64?

    init(attributes: KeyAttributes, material: KeyMaterial, version: UInt64, sessionID: UInt64?) {
        self.attributes = attributes
        self.material = material
        self.version = version
        self.sessionID = sessionID
    }

    var handle: KeyHandle { attributes.handle }
    var owner: UserID { attributes.owner }

    func matches(_ filter: KeyFilter) -> Bool {
        if let keyClass = filter.keyClass, attributes.keyClass != keyClass { return false }
        if let keyType = filter.keyType, attributes.keyType != keyType { return false }
        if let label = filter.label, attributes.label != label { return false }
        if let isSession = filter.isSession, attributes.isToken == isSession { return false }
        return true
    }
}
