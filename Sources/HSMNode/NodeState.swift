// Everything one HSM node holds: the store, the master key, the ready key objects, the
// users and who is logged in. Request handling asks this layer; it knows nothing of
// sessions' rules. Users and logins are in NodeState+Users.swift.

import CloudHSMCore
import Foundation
import OpenSSLKit

/// One node's keys and users. Thread-safe: one lock guards the in-memory maps, the
/// store has its own, and no lock is held during slow work (password hashing, RSA).
public final class NodeState: @unchecked Sendable {
    public static let version = "0.1.0"
    public static let defaultPasswordIterations = 100_000
    static let lockoutThreshold = 5

    public let store: NodeStore
    let context: CryptoContext
    let masterKey: [UInt8]
    public var nodeID: UInt8 { store.metadata.nodeID }
    public var clusterID: String { store.metadata.clusterID }
    /// PBKDF2 iterations for passwords set from now on.
    public let passwordIterations: Int
    /// Counters and gauges for `hsmd run --metrics-listen`; every part of the node reports here.
    public let metrics: NodeMetrics

    // Guarded by `lock`.
    let lock = NSLock()
    private var replicationHook: ReplicationHook?
    /// Users whose current record came from a peer rather than a request to this node.
    var usersFromPeers: Set<UserID> = []
    /// Ids of the live users: every request of a logged-in session checks its user here,
    /// so a deletion (local or replicated) ends the user's sessions at once.
    var liveUserIDs: Set<UserID> = []
    /// The user each logged-in session belongs to.
    var loggedIn: [UInt64: UserID] = [:]
    var tokenKeys: [KeyHandle: KeyObject] = [:]
    var sessionKeys: [KeyHandle: KeyObject] = [:]
    private var nextSessionID: UInt64 = 1
    private var signCount: UInt64 = 0
    private var decryptCount: UInt64 = 0
    private var ecdsaSignCount: UInt64 = 0
    /// Held across "write the store, then update the maps" for token keys and users, so
    /// a local change and a peer's record for the same handle cannot pass each other
    /// between the two steps. Taken before `lock`, never inside it.
    let applyLock = NSLock()
    /// Logins being checked per user, guarded by the condition itself.
    let loginGate = NSCondition()
    var loginsInFlight: [UserID: Int] = [:]

    /// Replication to peer nodes; nil on a node without peers (then creation needs no one
    /// else). Set once at start-up, before the node serves.
    var replication: ReplicationHook? {
        get { lock.withLock { replicationHook } }
        set { lock.withLock { replicationHook = newValue } }
    }

    /// Initialises a new node in `directory` (created 0700 if missing) with the crypto
    /// officer "admin".
    public static func initialize(
        directory: String, nodeID: UInt8, clusterID: String, coPassword: String, passwordIterations: Int,
        context: CryptoContext
    ) throws {
        guard nodeID <= 15 else { throw StoreError("node id \(nodeID) is out of range 0...15") }
        guard !clusterID.isEmpty else { throw StoreError("the cluster id is empty") }
        guard !coPassword.isEmpty else { throw StoreError("the crypto officer password is empty") }
        guard passwordIterations >= 1 else { throw StoreError("password iterations must be at least 1") }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw StoreError("\(directory) exists and is not a directory") }
            for name in [NodeStore.fileName, MasterKey.fileName]
            where FileManager.default.fileExists(atPath: directory + "/" + name) {
                throw StoreError("\(directory) is already initialised (it holds \(name))")
            }
        } else {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        _ = try MasterKey.create(directory: directory, context: context)
        let store = try NodeStore.create(
            directory: directory, nodeID: nodeID, clusterID: clusterID, passwordIterations: passwordIterations)
        let salt = try SecureRandom.bytes(16, context: context)
        let hash = try PasswordHash.pbkdf2SHA256(
            password: Array(coPassword.utf8), salt: salt, iterations: passwordIterations, length: 32, context: context)
        // The same id on every node, so the separately initialised nodes' admins are one
        // user (their records differ only in salt; the stamp's fingerprint picks one).
        try store.apply(
            userRecord: UserRecord(
                id: NodeStore.initialOfficerID, name: "admin", role: .cryptoOfficer, salt: salt, passwordHash: hash,
                iterations: passwordIterations, version: 1, isDeleted: false))
    }

    /// Opens an initialised node and makes every stored key ready for use.
    ///
    /// - Parameter passwordIterations: overrides the iterations chosen at init.
    public init(
        directory: String, passwordIterations: Int? = nil, context: CryptoContext, metrics: NodeMetrics = NodeMetrics()
    ) throws {
        let masterKey = try MasterKey.load(directory: directory)
        let store = try NodeStore(directory: directory)
        self.store = store
        self.context = context
        self.masterKey = masterKey
        self.passwordIterations = passwordIterations ?? store.metadata.passwordIterations
        self.metrics = metrics
        for record in try store.keyRecords() where !record.isDeleted {
            tokenKeys[record.handle] = try makeObject(record)
        }
        // Also reports a damaged user row now, not at login.
        liveUserIDs = Set(try store.userRecords().filter { !$0.isDeleted }.map(\.id))
        metrics.addCollector { [weak self] metrics in self?.collect(into: metrics) }
    }

    // MARK: Key objects

    func additionalData(_ handle: KeyHandle) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: handle >> (56 - 8 * UInt64($0))) }
    }

    /// Decrypts and parses a stored record once, at load.
    func makeObject(_ record: KeyRecord) throws -> KeyObject {
        let attributes = KeyAttributes(
            handle: record.handle, keyClass: record.keyClass, keyType: record.keyType, label: record.label,
            owner: record.owner, isToken: true, isExtractable: record.isExtractable, sizeInBits: record.sizeInBits,
            publicKeyInfo: record.publicKeyInfo)
        let material: KeyMaterial
        do {
            switch (record.keyClass, record.keyType) {
            case (.publicKey, .rsa):
                material = .rsaPublic
            case (.publicKey, .ec):
                material = .ecPublic
            case (.privateKey, .rsa), (.privateKey, .ec), (.secretKey, .aes), (.secretKey, .genericSecret):
                let plaintext = try AESGCM.open(
                    record.sealedMaterial, key: masterKey, additionalData: additionalData(record.handle),
                    context: context)
                switch record.keyType {
                case .rsa: material = .rsaPrivate(try RSAPrivateKey(der: plaintext, context: context))
                case .ec: material = .ecPrivate(try ECPrivateKey(der: plaintext, context: context))
                case .aes, .genericSecret: material = .secret(plaintext)
                }
            default:
                throw StoreError("a \(record.keyClass) key cannot be of type \(record.keyType)")
            }
        } catch {
            throw StoreError(
                "stored key \(record.handle) cannot be decrypted or parsed (wrong master key or damaged store): \(error)"
            )
        }
        return KeyObject(attributes: attributes, material: material, version: record.version, sessionID: nil)
    }

    /// One new object to create: its attributes (handle filled in later) and material.
    struct NewKey {
        var keyClass: KeyClass
        var keyType: KeyType
        var label: String
        var owner: UserID
        var isExtractable: Bool
        var sizeInBits: UInt32
        var publicKeyInfo: [UInt8]
        var material: KeyMaterial
        /// What is sealed at rest: raw secret bytes or PKCS#8.
        var plaintext: [UInt8]
    }

    /// Creates objects under fresh handles: token keys are committed to disk (all or
    /// none) before this returns; session keys belong to `sessionID` and live in memory.
    func create(_ keys: [NewKey], sessionID: UInt64?) throws -> [KeyHandle] {
        let handles = try store.allocateHandles(keys.count)
        var objects: [KeyObject] = []
        var records: [KeyRecord] = []
        for (key, handle) in zip(keys, handles) {
            let attributes = KeyAttributes(
                handle: handle, keyClass: key.keyClass, keyType: key.keyType, label: key.label, owner: key.owner,
                isToken: sessionID == nil, isExtractable: key.isExtractable, sizeInBits: key.sizeInBits,
                publicKeyInfo: key.publicKeyInfo)
            objects.append(
                KeyObject(
                    attributes: attributes, material: key.material, version: sessionID == nil ? 1 : 0,
                    sessionID: sessionID))
            guard sessionID == nil else { continue }
            let sealed =
                key.keyClass == .publicKey
                ? []
                : try AESGCM.seal(
                    plaintext: key.plaintext, key: masterKey, additionalData: additionalData(handle), context: context)
            records.append(
                KeyRecord(
                    handle: handle, keyClass: key.keyClass, keyType: key.keyType, label: key.label, owner: key.owner,
                    isExtractable: key.isExtractable, sizeInBits: key.sizeInBits, publicKeyInfo: key.publicKeyInfo,
                    sealedMaterial: sealed, version: 1, isDeleted: false))
        }
        if !records.isEmpty {
            // On disk first (this node is one of the min_nodes), but not yet visible: a key
            // that does not reach enough nodes is never served.
            try applyLock.withLock {
                // A new handle the store already holds would leave the client a handle that
                // names another key. Allocation rules it out; this guards a damaged store.
                for record in records where try store.keyRecord(handle: record.handle) != nil {
                    throw HSMError(
                        .internalError, "new key handle \(record.handle) is already taken here; nothing was created")
                }
                _ = try store.apply(keyRecords: records)
            }
            if let replication {
                let outgoing = zip(records, keys).map { record, key in
                    Self.peerRecord(record, material: record.keyClass == .publicKey ? [] : key.plaintext)
                }
                let needed = replication.minNodes - 1
                let stored = replication.push(PeerRecords(keys: outgoing), waitFor: needed)
                if stored < needed {
                    try abandon(records, replication: replication)
                    throw HSMError(
                        .insufficientNodes,
                        "the key reached \(stored + 1) HSM(s), \(replication.minNodes) are required; it was not created"
                    )
                }
            }
        }
        lock.withLock {
            for object in objects {
                if sessionID == nil { tokenKeys[object.handle] = object } else { sessionKeys[object.handle] = object }
            }
        }
        return handles
    }

    /// Tombstones records whose creation failed, here and on the peers that took them (a
    /// peer that misses this push gets the tombstone at its next sync: it is newer).
    private func abandon(_ records: [KeyRecord], replication: ReplicationHook) throws {
        let tombstones = records.map { record -> KeyRecord in
            var tombstone = record
            tombstone.version += 1
            tombstone.isDeleted = true
            tombstone.sealedMaterial = []
            return tombstone
        }
        try applyLock.withLock { _ = try store.apply(keyRecords: tombstones) }
        _ = replication.push(PeerRecords(keys: tombstones.map { Self.peerRecord($0, material: []) }), waitFor: nil)
    }

    static func peerRecord(_ r: KeyRecord, material: [UInt8]) -> PeerKeyRecord {
        PeerKeyRecord(
            handle: r.handle, keyClass: r.keyClass, keyType: r.keyType, label: r.label, owner: r.owner,
            isExtractable: r.isExtractable, sizeInBits: r.sizeInBits, publicKeyInfo: r.publicKeyInfo,
            material: material, version: r.version, isDeleted: r.isDeleted)
    }

    /// The object `handle` names as `sessionID` sees it: token keys, and session keys of
    /// that session only.
    func object(_ handle: KeyHandle, sessionID: UInt64) -> KeyObject? {
        lock.withLock {
            if let object = tokenKeys[handle] { return object }
            if let object = sessionKeys[handle], object.sessionID == sessionID { return object }
            return nil
        }
    }

    /// Every key visible to `sessionID` and owned by `owner`, in handle order.
    func objects(owner: UserID, sessionID: UInt64) -> [KeyObject] {
        lock.withLock {
            let token = tokenKeys.values.filter { $0.owner == owner }
            let session = sessionKeys.values.filter { $0.sessionID == sessionID }
            return (token + session).sorted { $0.handle < $1.handle }
        }
    }

    /// Deletes a key: a tombstone on disk for token keys, then gone from memory, then
    /// pushed to the peers (a peer that misses it gets it at its next sync).
    func delete(_ object: KeyObject) throws {
        if object.attributes.isToken {
            let a = object.attributes
            let tombstone = KeyRecord(
                handle: a.handle, keyClass: a.keyClass, keyType: a.keyType, label: a.label, owner: a.owner,
                isExtractable: a.isExtractable, sizeInBits: a.sizeInBits, publicKeyInfo: a.publicKeyInfo,
                sealedMaterial: [], version: object.version + 1, isDeleted: true)
            try applyLock.withLock {
                try store.apply(keyRecord: tombstone)
                lock.withLock { _ = tokenKeys.removeValue(forKey: a.handle) }
            }
            _ = replication?.push(PeerRecords(keys: [Self.peerRecord(tombstone, material: [])]), waitFor: nil)
        } else {
            lock.withLock { _ = sessionKeys.removeValue(forKey: object.handle) }
        }
    }

    // MARK: Sessions and counters

    func openSession() -> UInt64 {
        lock.withLock {
            defer { nextSessionID += 1 }
            return nextSessionID
        }
    }

    /// Logs the session out and destroys its keys (logout or disconnect).
    func closeSession(_ sessionID: UInt64) {
        lock.withLock {
            loggedIn.removeValue(forKey: sessionID)
            sessionKeys = sessionKeys.filter { $0.value.sessionID != sessionID }
        }
    }

    func countSign() { lock.withLock { signCount += 1 } }
    func countDecrypt() { lock.withLock { decryptCount += 1 } }
    func countECDSASign() { lock.withLock { ecdsaSignCount += 1 } }

    /// Keys and users held, for a scrape.
    private func collect(into metrics: NodeMetrics) {
        let (token, session, userCount) = lock.withLock { (tokenKeys.count, sessionKeys.count, liveUserIDs.count) }
        let help = "Key objects held: token keys (on every node) and session keys (this node's sessions)"
        metrics.set("hsmd_keys", labels: [("kind", "token")], to: Double(token), help: help)
        metrics.set("hsmd_keys", labels: [("kind", "session")], to: Double(session), help: help)
        metrics.set("hsmd_users", to: Double(userCount), help: "Users (crypto officers and crypto users)")
        // One small query per user; a read error leaves the last value.
        if let locked = try? users().filter({ $0.failedLogins >= Self.lockoutThreshold }).count {
            metrics.set(
                "hsmd_users_locked", to: Double(locked),
                help: "Users locked after too many failed logins, counted on every node of the cluster")
        }
    }

    func info() throws -> NodeInfo {
        lock.withLock {
            NodeInfo(
                nodeId: UInt32(nodeID), clusterId: clusterID, version: Self.version,
                tokenKeyCount: UInt64(tokenKeys.count), sessionKeyCount: UInt64(sessionKeys.count),
                signOperations: signCount, decryptOperations: decryptCount, userCount: UInt32(liveUserIDs.count),
                ecdsaSignOperations: ecdsaSignCount)
        }
    }
}

/// Compares without stopping at the first difference.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
}
