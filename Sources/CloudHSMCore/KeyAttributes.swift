// The vocabulary of keys and users shared by nodes, client and tools. Numeric values
// follow AWS CloudHSM's key_mgmt_util constants (PKCS#11 classes, -t key types).

public typealias KeyHandle = UInt64

/// A user's cluster-wide id. Given once and never reused, so a key owned by a deleted
/// user never becomes another user's key, even one who takes the same name.
public typealias UserID = UInt32

/// OBJ_ATTR_CLASS values.
public enum KeyClass: UInt32, Sendable, CaseIterable {
    case publicKey = 2
    case privateKey = 3
    case secretKey = 4
}

/// OBJ_ATTR_KEY_TYPE values (key_mgmt_util's `-t`).
public enum KeyType: UInt32, Sendable, CaseIterable {
    case rsa = 0
    /// Elliptic curve (PKCS#11 CKK_EC): P-256, P-384 or P-521 (`ECCurve`).
    case ec = 3
    case genericSecret = 16
    case aes = 31
}

public enum UserRole: UInt8, Sendable, CaseIterable {
    case cryptoOfficer = 1
    case cryptoUser = 2

    /// `CO` or `CU`, as the tools spell them.
    public var shortName: String { self == .cryptoOfficer ? "CO" : "CU" }

    public init?(shortName: String) {
        switch shortName.uppercased() {
        case "CO": self = .cryptoOfficer
        case "CU": self = .cryptoUser
        default: return nil
        }
    }
}

public enum DigestAlgorithm: UInt8, Sendable, CaseIterable {
    /// No DigestInfo: the data is signed as given (PKCS#1 v1.5 type 1 padding only).
    case none = 0
    case sha1 = 1
    case sha224 = 2
    case sha256 = 3
    case sha384 = 4
    case sha512 = 5

    /// OpenSSL's name for the digest; nil for `.none`.
    public var openSSLName: String? {
        switch self {
        case .none: return nil
        case .sha1: return "SHA1"
        case .sha224: return "SHA224"
        case .sha256: return "SHA256"
        case .sha384: return "SHA384"
        case .sha512: return "SHA512"
        }
    }

    public var outputLength: Int {
        switch self {
        case .none: return 0
        case .sha1: return 20
        case .sha224: return 28
        case .sha256: return 32
        case .sha384: return 48
        case .sha512: return 64
        }
    }

    /// Accepts `sha256`, `SHA-256`, `SHA2-256` and the like.
    public init?(name: String) {
        let folded = String(name.uppercased().filter { $0 != "-" })
        switch folded {
        case "SHA1": self = .sha1
        case "SHA224", "SHA2224": self = .sha224
        case "SHA256", "SHA2256": self = .sha256
        case "SHA384", "SHA2384": self = .sha384
        case "SHA512", "SHA2512": self = .sha512
        default: return nil
        }
    }
}

/// How a private key signs. The input is always a digest (or, for `.raw`, a block the
/// size of the modulus): hashing happens on the host.
public enum SignMechanism: Hashable, Sendable {
    /// RSA PKCS#1 v1.5: DigestInfo for `digest` around the input, then type 1 padding.
    case pkcs1(digest: DigestAlgorithm)
    /// RSA PSS.
    case pss(digest: DigestAlgorithm, mgf1Digest: DigestAlgorithm, saltLength: UInt32)
    /// The raw RSA private operation on a modulus-sized block.
    case raw
    /// ECDSA over a digest made by `digest` (its exact length), or with `.none` over a
    /// digest of any of the lengths `ECDSAInput` accepts. The signature is a DER
    /// `ECDSA-Sig-Value`, as OpenSSL's ECDSA_sign writes it.
    case ecdsa(digest: DigestAlgorithm)

    /// True for the mechanisms of EC keys.
    public var isECDSA: Bool {
        if case .ecdsa = self { return true }
        return false
    }
}

/// How an RSA private key decrypts.
public enum DecryptMechanism: Equatable, Sendable {
    case raw
    case pkcs1
    case oaep(digest: DigestAlgorithm, mgf1Digest: DigestAlgorithm, label: [UInt8])
}

/// What a node tells about one key. Secret material never appears here.
public struct KeyAttributes: Equatable, Sendable {
    public var handle: KeyHandle
    public var keyClass: KeyClass
    public var keyType: KeyType
    public var label: String
    /// The id of the crypto user that owns the key.
    public var owner: UserID
    public var isToken: Bool
    public var isExtractable: Bool
    /// Bits of the RSA modulus, of an EC key's field (256, 384, 521), or 8 × the secret
    /// key's length.
    public var sizeInBits: UInt32
    /// DER SubjectPublicKeyInfo for RSA and EC keys (public and private objects); empty
    /// otherwise.
    public var publicKeyInfo: [UInt8]

    public init(
        handle: KeyHandle, keyClass: KeyClass, keyType: KeyType, label: String, owner: UserID,
        isToken: Bool, isExtractable: Bool, sizeInBits: UInt32, publicKeyInfo: [UInt8]
    ) {
        self.handle = handle
        self.keyClass = keyClass
        self.keyType = keyType
        self.label = label
        self.owner = owner
        self.isToken = isToken
        self.isExtractable = isExtractable
        self.sizeInBits = sizeInBits
        self.publicKeyInfo = publicKeyInfo
    }
}

/// What findKey filters on; nil fields match anything.
public struct KeyFilter: Equatable, Sendable {
    public var keyClass: KeyClass?
    public var keyType: KeyType?
    public var label: String?
    /// true: session keys only; false: token keys only.
    public var isSession: Bool?

    public init(keyClass: KeyClass? = nil, keyType: KeyType? = nil, label: String? = nil, isSession: Bool? = nil) {
        self.keyClass = keyClass
        self.keyType = keyType
        self.label = label
        self.isSession = isSession
    }
}

public struct UserInfo: Equatable, Sendable {
    public var id: UserID
    public var role: UserRole
    public var name: String
    public var isLocked: Bool
    /// Failed logins counted on every node of the cluster, not yet forgiven.
    public var failedLogins: UInt32

    public init(id: UserID, role: UserRole, name: String, isLocked: Bool, failedLogins: UInt32) {
        self.id = id
        self.role = role
        self.name = name
        self.isLocked = isLocked
        self.failedLogins = failedLogins
    }
}

/// What `nodeInfo` answers. Before login a node tells only who it is (node id, cluster
/// id, version: what a client's probe and cluster-id check need); the counters, key and
/// user counts need a logged-in session.
public struct NodeInfo: Equatable, Sendable {
    public var nodeId: UInt32
    public var clusterId: String
    public var version: String
    /// False in an answer to a session that has not logged in: the counts below are then
    /// not known (they read 0) and must not be shown as figures.
    public var includesCounters: Bool
    public var tokenKeyCount: UInt64
    public var sessionKeyCount: UInt64
    /// RSA signatures.
    public var signOperations: UInt64
    /// RSA decryptions.
    public var decryptOperations: UInt64
    public var userCount: UInt32
    /// ECDSA signatures, counted apart from RSA's.
    public var ecdsaSignOperations: UInt64

    public var privateKeyOperations: UInt64 { signOperations + decryptOperations + ecdsaSignOperations }

    public init(
        nodeId: UInt32, clusterId: String, version: String, tokenKeyCount: UInt64, sessionKeyCount: UInt64,
        signOperations: UInt64, decryptOperations: UInt64, userCount: UInt32, ecdsaSignOperations: UInt64 = 0
    ) {
        self.nodeId = nodeId
        self.clusterId = clusterId
        self.version = version
        self.includesCounters = true
        self.tokenKeyCount = tokenKeyCount
        self.sessionKeyCount = sessionKeyCount
        self.signOperations = signOperations
        self.decryptOperations = decryptOperations
        self.userCount = userCount
        self.ecdsaSignOperations = ecdsaSignOperations
    }

    /// Only who the node is, for a session that has not logged in.
    public init(nodeId: UInt32, clusterId: String, version: String) {
        self.init(
            nodeId: nodeId, clusterId: clusterId, version: version, tokenKeyCount: 0, sessionKeyCount: 0,
            signOperations: 0, decryptOperations: 0, userCount: 0)
        includesCounters = false
    }
}
