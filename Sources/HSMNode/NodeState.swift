// Everything one HSM node holds: the store, the master key, the ready key objects and
// the users. Request handling asks this layer; it knows nothing of sessions' rules.

import CloudHSMCore
import Foundation
import OpenSSLKit

/// One node's keys and users. Thread-safe: one lock guards the in-memory maps, the
/// store has its own, and no lock is held during slow work (password hashing, RSA).
public final class NodeState: @unchecked Sendable {
    public static let version = "0.1.0"
    public static let defaultPasswordIterations = 100_000
    static let lockoutThreshold: UInt32 = 5

    public let store: NodeStore
    let context: CryptoContext
    let masterKey: [UInt8]
    public var nodeID: UInt8 { store.metadata.nodeID }
    public var clusterID: String { store.metadata.clusterID }
    /// PBKDF2 iterations for passwords set from now on.
    public let passwordIterations: Int

    // Guarded by `lock`.
    let lock = NSLock()
    private var replicationHook: ReplicationHook?
    /// Users whose current record came from a peer rather than a request to this node.
    var usersFromPeers: Set<String> = []
    var tokenKeys: [KeyHandle: KeyObject] = [:]
    private var sessionKeys: [KeyHandle: KeyObject] = [:]
    private var nextSessionID: UInt64 = 1
    private var signCount: UInt64 = 0
    private var decryptCount: UInt64 = 0
    /// Held across "write the store, then update the maps" for token keys and users, so
    /// a local change and a peer's record for the same handle cannot pass each other
    /// between the two steps. Taken before `lock`, never inside it.
    let applyLock = NSLock()
    /// Logins being checked per user name, guarded by the condition itself.
    private let loginGate = NSCondition()
    private var loginsInFlight: [String: UInt32] = [:]

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
        try store.apply(
            userRecord: UserRecord(
                id: 1, name: "admin", role: .cryptoOfficer, salt: salt, passwordHash: hash,
                iterations: passwordIterations, failedLogins: 0, version: 1, isDeleted: false))
    }

    /// Opens an initialised node and makes every stored key ready for use.
    ///
    /// - Parameter passwordIterations: overrides the iterations chosen at init.
    public init(directory: String, passwordIterations: Int? = nil, context: CryptoContext) throws {
        let masterKey = try MasterKey.load(directory: directory)
        let store = try NodeStore(directory: directory)
        self.store = store
        self.context = context
        self.masterKey = masterKey
        self.passwordIterations = passwordIterations ?? store.metadata.passwordIterations
        for record in try store.keyRecords() where !record.isDeleted {
            tokenKeys[record.handle] = try makeObject(record)
        }
        _ = try store.userRecords()  // a damaged user row is reported now, not at login
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
            switch record.keyClass {
            case .publicKey:
                material = .rsaPublic
            case .privateKey, .secretKey:
                let plaintext = try AESGCM.open(
                    record.sealedMaterial, key: masterKey, additionalData: additionalData(record.handle),
                    context: context)
                if record.keyClass == .privateKey {
                    material = .rsaPrivate(try RSAPrivateKey(der: plaintext, context: context))
                } else {
                    material = .secret(plaintext)
                }
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
        var owner: String
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
            try applyLock.withLock { _ = try store.apply(keyRecords: records) }
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
    func objects(owner: String, sessionID: UInt64) -> [KeyObject] {
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

    /// Destroys the session's keys (logout or disconnect).
    func closeSession(_ sessionID: UInt64) {
        lock.withLock { sessionKeys = sessionKeys.filter { $0.value.sessionID != sessionID } }
    }

    func countSign() { lock.withLock { signCount += 1 } }
    func countDecrypt() { lock.withLock { decryptCount += 1 } }

    func info() throws -> NodeInfo {
        let users = try store.userRecords().filter { !$0.isDeleted }.count
        return lock.withLock {
            NodeInfo(
                nodeId: UInt32(nodeID), clusterId: clusterID, version: Self.version,
                tokenKeyCount: UInt64(tokenKeys.count), sessionKeyCount: UInt64(sessionKeys.count),
                signOperations: signCount, decryptOperations: decryptCount, userCount: UInt32(users))
        }
    }

    // MARK: Users

    private func hash(_ password: String, salt: [UInt8], iterations: Int) throws -> [UInt8] {
        try PasswordHash.pbkdf2SHA256(
            password: Array(password.utf8), salt: salt, iterations: iterations, length: 32, context: context)
    }

    /// Checks a login. Unknown users and wrong passwords fail alike; after five failures
    /// in a row the user is locked until a crypto officer sets a new password.
    func authenticate(role: UserRole, name: String, password: String) throws -> Result<UserRecord, HSMError> {
        guard let user = try store.userRecord(name: name), !user.isDeleted else {
            // The same slow hash as a real check, so timing does not tell which names exist.
            _ = try hash(password, salt: [UInt8](repeating: 0, count: 16), iterations: passwordIterations)
            return .failure(HSMError(.loginFailed))
        }
        // A user has as many attempts in flight at once as failures left before the lockout:
        // parallel guesses on many connections cannot all be checked before the failures
        // are counted. Parallel correct logins just wait their turn.
        loginGate.lock()
        while true {
            let failed: UInt32
            do {
                failed = try store.userRecord(name: name)?.failedLogins ?? Self.lockoutThreshold
            } catch {
                loginGate.unlock()
                throw error
            }
            if failed >= Self.lockoutThreshold {
                loginGate.unlock()
                return .failure(
                    HSMError(.userLocked, "user \(name) is locked; a crypto officer must set a new password"))
            }
            if loginsInFlight[name, default: 0] < Self.lockoutThreshold - failed { break }
            loginGate.wait()
        }
        loginsInFlight[name, default: 0] += 1
        loginGate.unlock()
        defer {
            loginGate.lock()
            loginsInFlight[name, default: 1] -= 1
            loginGate.broadcast()
            loginGate.unlock()
        }
        let candidate = try hash(password, salt: user.salt, iterations: user.iterations)
        guard constantTimeEqual(candidate, user.passwordHash) else {
            try store.recordFailedLogin(name: name)
            return .failure(HSMError(.loginFailed))
        }
        guard user.role == role else { return .failure(HSMError(.loginFailed)) }
        // Failures may have been counted while this attempt waited its turn.
        try store.resetFailedLogins(name: name)
        return .success(user)
    }

    func createUser(role: UserRole, name: String, password: String) throws -> HSMError? {
        guard Self.isValidUserName(name) else {
            return HSMError(.invalidArgument, "a user name is 1 to 32 letters, digits, '_', '-' or '.'")
        }
        guard !password.isEmpty else { return HSMError(.invalidArgument, "the password is empty") }
        let existing = try store.userRecord(name: name)
        if let existing, !existing.isDeleted {
            // cloudhsm_mgmt_util sends createUser to every node, and replication may have
            // brought this very user here first: that is success, not a conflict.
            if isFromPeer(name), existing.role == role,
                constantTimeEqual(
                    try hash(password, salt: existing.salt, iterations: existing.iterations), existing.passwordHash)
            {
                return nil
            }
            return HSMError(.userExists, "user \(name) exists")
        }
        let salt = try SecureRandom.bytes(16, context: context)
        let hashed = try hash(password, salt: salt, iterations: passwordIterations)
        let id = try existing?.id ?? store.nextUserID()
        try changeUser(
            UserRecord(
                id: id, name: name, role: role, salt: salt, passwordHash: hashed, iterations: passwordIterations,
                failedLogins: 0, version: (existing?.version ?? 0) + 1, isDeleted: false))
        return nil
    }

    func deleteUser(name: String) throws {
        guard var user = try store.userRecord(name: name), !user.isDeleted else { return }
        user.isDeleted = true
        user.version += 1
        user.passwordHash = []
        user.salt = []
        try changeUser(user)
    }

    /// True when `name` was deleted by a change that came from a peer: a deleteUser that
    /// cloudhsm_mgmt_util also sent here has then already been done.
    func wasDeletedByPeer(_ name: String) throws -> Bool {
        guard let user = try store.userRecord(name: name), user.isDeleted else { return false }
        return isFromPeer(name)
    }

    private func isFromPeer(_ name: String) -> Bool {
        lock.withLock { usersFromPeers.contains(name) }
    }

    /// Stores a change made by a request to this node and pushes it to the peers.
    private func changeUser(_ record: UserRecord) throws {
        try applyLock.withLock {
            try store.apply(userRecord: record)
            lock.withLock { _ = usersFromPeers.remove(record.name) }
        }
        _ = replication?.push(PeerRecords(users: [Self.peerRecord(record)]), waitFor: nil)
    }

    static func peerRecord(_ u: UserRecord) -> PeerUserRecord {
        PeerUserRecord(
            id: u.id, name: u.name, role: u.role, salt: u.salt, passwordHash: u.passwordHash,
            iterations: UInt32(clamping: u.iterations), version: u.version, isDeleted: u.isDeleted)
    }

    /// Sets a new password and clears the failed-login count (which unlocks the user).
    func changePassword(name: String, newPassword: String) throws -> HSMError? {
        guard var user = try store.userRecord(name: name), !user.isDeleted else {
            return HSMError(.userNotFound, "no user \(name)")
        }
        guard !newPassword.isEmpty else { return HSMError(.invalidArgument, "the password is empty") }
        user.salt = try SecureRandom.bytes(16, context: context)
        user.iterations = passwordIterations
        user.passwordHash = try hash(newPassword, salt: user.salt, iterations: user.iterations)
        user.failedLogins = 0
        user.version += 1
        try changeUser(user)
        return nil
    }

    func users() throws -> [UserRecord] {
        try store.userRecords().filter { !$0.isDeleted }
    }

    static func isValidUserName(_ name: String) -> Bool {
        guard (1...32).contains(name.utf8.count) else { return false }
        return name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
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
