// The node's durable store: one SQLite file in WAL mode with synchronous=FULL, so a
// commit that returned is on disk and survives kill -9. Keys and users are versioned
// records with tombstones, shaped so that a peer's record can later be applied as is;
// failed logins are a log that merges with the peers' (see LoginFailureLog).

import CloudHSMCore
import Foundation

/// One key object as stored. Secret material is sealed under the node's master key.
public struct KeyRecord: Equatable, Sendable {
    public var handle: KeyHandle
    public var keyClass: KeyClass
    public var keyType: KeyType
    public var label: String
    public var owner: UserID
    public var isExtractable: Bool
    public var sizeInBits: UInt32
    /// DER SubjectPublicKeyInfo for RSA objects; empty otherwise.
    public var publicKeyInfo: [UInt8]
    /// AES-256-GCM under the master key with the handle as additional data; empty for
    /// public keys and tombstones.
    public var sealedMaterial: [UInt8]
    /// Grows with every change; the newer version wins when records meet.
    public var version: UInt64
    public var isDeleted: Bool
}

extension KeyRecord {
    /// Where this version stands against others of the same handle.
    public var stamp: RecordStamp { RecordStamp(version: version, isDeleted: isDeleted) }
}

/// One user as stored. Only a salted PBKDF2 hash of the password is kept. The id is
/// the user's identity across the cluster; the name is unique among live users only.
public struct UserRecord: Equatable, Sendable {
    public var id: UserID
    public var name: String
    public var role: UserRole
    public var salt: [UInt8]
    public var passwordHash: [UInt8]
    public var iterations: Int
    public var version: UInt64
    public var isDeleted: Bool
}

extension UserRecord {
    /// Where this version stands against others of the same id. Two nodes that took the
    /// same change (cloudhsm_mgmt_util sends it to each) make equal versions with different
    /// salts; the fingerprint lets every node pick the same one.
    public var stamp: RecordStamp {
        RecordStamp(version: version, isDeleted: isDeleted, fingerprint: fingerprint)
    }

    /// FNV-1a over the role, iterations, salt and hash: an order, not a secret.
    var fingerprint: UInt64 {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ byte: UInt8) {
            value ^= UInt64(byte)
            value &*= 0x0000_0100_0000_01b3
        }
        mix(role.rawValue)
        for shift in stride(from: 56, through: 0, by: -8) { mix(UInt8(truncatingIfNeeded: iterations >> shift)) }
        salt.forEach(mix)
        passwordHash.forEach(mix)
        return value
    }

    /// The deletion of this version: the same on every node that makes it, so nodes that
    /// delete the same user at once agree.
    var tombstone: UserRecord {
        var record = self
        record.version += 1
        record.isDeleted = true
        record.salt = []
        record.passwordHash = []
        return record
    }
}

/// What applying a user record did.
public struct UserApplication: Equatable, Sendable {
    /// The record was newer than the store's and is now stored.
    public var isWritten: Bool
    /// Live users of the same name that lost to another id and were deleted for it.
    public var superseded: [UserRecord]
}

/// What the store knows about the node itself.
public struct NodeMetadata: Equatable, Sendable {
    public var nodeID: UInt8
    public var clusterID: String
    /// PBKDF2 iterations for new passwords, set at `hsmd init`.
    public var passwordIterations: Int
}

public struct StoreError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
    init(_ message: String) { self.message = message }
}

/// The SQLite file of one node. All methods are thread-safe (one lock around the
/// connection); each change is its own committed transaction.
public final class NodeStore: @unchecked Sendable {
    /// 2: users are identified by cluster-wide ids, keys are owned by ids, failed logins
    /// are a mergeable log. A version-1 store is migrated when it is opened.
    static let schemaVersion: Int64 = 2
    static let fileName = "node.sqlite"
    /// The crypto officer `hsmd init` makes has this id on every node; ids given out
    /// later are `counter << 4 | nodeID` with a counter from 1, so they never meet it.
    public static let initialOfficerID: UserID = 1
    /// User ids from the counter stay below this; ids of users migrated from schema 1
    /// are at or above it.
    static let migratedUserIDBase: UserID = 0x8000_0000

    private let database: SQLiteDatabase
    private let lock = NSLock()
    public let metadata: NodeMetadata

    private static let tables = """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            role INTEGER NOT NULL,
            salt BLOB NOT NULL,
            hash BLOB NOT NULL,
            iterations INTEGER NOT NULL,
            version INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX users_by_name ON users (name);
        CREATE TABLE keys (
            handle INTEGER PRIMARY KEY,
            class INTEGER NOT NULL,
            type INTEGER NOT NULL,
            label TEXT NOT NULL,
            owner INTEGER NOT NULL,
            extractable INTEGER NOT NULL,
            size_bits INTEGER NOT NULL,
            public_key_info BLOB,
            material BLOB,
            version INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE login_marks (
            user_id INTEGER NOT NULL,
            node_id INTEGER NOT NULL,
            counted INTEGER NOT NULL,
            forgiven INTEGER NOT NULL,
            PRIMARY KEY (user_id, node_id));
        CREATE TABLE login_failures (
            user_id INTEGER NOT NULL,
            node_id INTEGER NOT NULL,
            sequence INTEGER NOT NULL,
            tag INTEGER NOT NULL,
            PRIMARY KEY (user_id, node_id, sequence));
        """

    /// Creates the store of a new node in `directory`, which must not hold one yet.
    public static func create(
        directory: String, nodeID: UInt8, clusterID: String, passwordIterations: Int
    ) throws -> NodeStore {
        let path = directory + "/" + fileName
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError("\(path) already exists: the node is already initialised")
        }
        let database = try SQLiteDatabase(path: path, create: true)
        chmod(path, 0o600)
        try configure(database)
        try database.transaction {
            try database.execute(
                """
                CREATE TABLE meta (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    schema_version INTEGER NOT NULL,
                    node_id INTEGER NOT NULL,
                    cluster_id TEXT NOT NULL,
                    handle_counter INTEGER NOT NULL,
                    password_iterations INTEGER NOT NULL,
                    user_counter INTEGER NOT NULL DEFAULT 0);
                """ + tables)
            try database.query(
                "INSERT INTO meta VALUES (1, ?, ?, ?, 0, ?, 0)",
                [
                    .integer(schemaVersion), .integer(Int64(nodeID)), .text(clusterID),
                    .integer(Int64(passwordIterations)),
                ])
        }
        return try NodeStore(database: database)
    }

    /// Opens the store of an initialised node, migrating a schema-1 store first.
    public convenience init(directory: String) throws {
        let path = directory + "/" + NodeStore.fileName
        guard FileManager.default.fileExists(atPath: path) else {
            throw StoreError("\(path) does not exist: run 'hsmd init' for this data directory first")
        }
        let database = try SQLiteDatabase(path: path, create: false)
        try NodeStore.configure(database)
        try self.init(database: database)
    }

    private init(database: SQLiteDatabase) throws {
        self.database = database
        let rows: [[SQLiteValue]]
        do {
            rows = try database.query(
                "SELECT schema_version, node_id, cluster_id, password_iterations FROM meta WHERE id = 1")
        } catch {
            throw StoreError("\(database.path) is not a node store: \(error)")
        }
        guard let row = rows.first, row.count == 4, var schema = row[0].integer, let nodeID = row[1].integer,
            let clusterID = row[2].text, let iterations = row[3].integer
        else { throw StoreError("\(database.path): the node metadata is missing or damaged") }
        guard (0...15).contains(nodeID), iterations >= 1 else {
            throw StoreError("\(database.path): the node metadata is damaged (node id \(nodeID))")
        }
        if schema == 1 {
            do {
                try Self.migrateFromSchema1(database, nodeID: UInt8(nodeID))
            } catch {
                throw StoreError("\(database.path): migrating the store from schema 1 to 2 failed: \(error)")
            }
            schema = 2
        }
        guard schema == NodeStore.schemaVersion else {
            throw StoreError("\(database.path): schema version \(schema), this hsmd reads \(NodeStore.schemaVersion)")
        }
        self.metadata = NodeMetadata(nodeID: UInt8(nodeID), clusterID: clusterID, passwordIterations: Int(iterations))
    }

    private static func configure(_ database: SQLiteDatabase) throws {
        do {
            try database.query("PRAGMA journal_mode=WAL")
            try database.execute("PRAGMA synchronous=FULL")
            // Refuse a damaged file now instead of failing on some later request.
            let check = try database.query("PRAGMA quick_check")
            guard check.first?.first?.text == "ok" else {
                throw StoreError("integrity check failed: \(check.first?.first?.text ?? "no answer")")
            }
        } catch {
            throw StoreError("\(database.path) is not a usable node store: \(error)")
        }
    }

    private func locked<T>(_ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Blocks until no change is in flight, then keeps the store closed to changes;
    /// used on shutdown so the process never exits halfway through a commit.
    public func quiesce() {
        lock.lock()
    }

    // MARK: Migration

    /// Schema 1 named users and owners by user name and gave each node its own user ids.
    /// Every node migrates alone, so the new ids come from the names: the same name gets
    /// the same id on every node without asking anyone. Keys of users that are gone keep
    /// the id of their old owner's name, which no live user has (a user made from now on
    /// gets a counter id below `migratedUserIDBase`). Failed logins become this node's
    /// entries in the log. All in one transaction: the store is migrated, or untouched.
    private static func migrateFromSchema1(_ database: SQLiteDatabase, nodeID: UInt8) throws {
        try database.transaction {
            let users = try database.query(
                "SELECT name, role, salt, hash, iterations, failed_logins, version, deleted FROM users")
            let owners = try database.query("SELECT DISTINCT owner FROM keys").compactMap { $0.first?.text }
            let ids = migratedUserIDs(for: Set(users.compactMap { $0.first?.text } + owners))
            try database.execute(
                """
                ALTER TABLE users RENAME TO users_v1;
                ALTER TABLE keys RENAME TO keys_v1;
                ALTER TABLE meta ADD COLUMN user_counter INTEGER NOT NULL DEFAULT 0;
                """ + tables)
            for row in users {
                guard row.count == 8, let name = row[0].text, let id = ids[name], let failed = row[5].integer else {
                    throw StoreError("a stored user is damaged")
                }
                try database.query(
                    "INSERT INTO users (id, name, role, salt, hash, iterations, version, deleted) "
                        + "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [.integer(Int64(id)), .text(name), row[1], row[2], row[3], row[4], row[6], row[7]])
                guard failed > 0 else { continue }
                // Distinct tags: they were distinct attempts, on this node.
                try database.query(
                    "INSERT INTO login_marks VALUES (?, ?, ?, 0)",
                    [.integer(Int64(id)), .integer(Int64(nodeID)), .integer(failed)])
                for sequence in 1...failed {
                    try database.query(
                        "INSERT INTO login_failures VALUES (?, ?, ?, ?)",
                        [
                            .integer(Int64(id)), .integer(Int64(nodeID)), .integer(sequence),
                            .integer(Int64(nodeID) << 32 | sequence),
                        ])
                }
            }
            try database.execute(
                """
                INSERT INTO keys (handle, class, type, label, owner, extractable, size_bits, public_key_info,
                                  material, version, deleted)
                    SELECT handle, class, type, label, 0, extractable, size_bits, public_key_info, material,
                           version, deleted FROM keys_v1;
                """)
            for owner in owners {
                guard let id = ids[owner] else { continue }
                try database.query(
                    "UPDATE keys SET owner = ? WHERE handle IN (SELECT handle FROM keys_v1 WHERE owner = ?)",
                    [.integer(Int64(id)), .text(owner)])
            }
            try database.execute(
                """
                DROP TABLE users_v1;
                DROP TABLE keys_v1;
                UPDATE meta SET schema_version = 2 WHERE id = 1;
                """)
        }
    }

    /// The ids schema-1 names get: `admin` keeps the initial officer's id, every other
    /// name an id from a hash of the name (at or above `migratedUserIDBase`). Names are
    /// taken in order and a taken id makes the name hash again with a suffix, so nodes
    /// that hold the same names agree even on a collision.
    static func migratedUserIDs(for names: Set<String>) -> [String: UserID] {
        var ids: [String: UserID] = [:]
        var taken: Set<UserID> = []
        if names.contains("admin") {
            ids["admin"] = initialOfficerID
            taken.insert(initialOfficerID)
        }
        for name in names.sorted() where name != "admin" {
            var attempt = 0
            while true {
                let id = migratedUserID(hashing: attempt == 0 ? name : "\(name)#\(attempt)")
                if taken.insert(id).inserted {
                    ids[name] = id
                    break
                }
                attempt += 1
            }
        }
        return ids
    }

    /// FNV-1a (32 bits) of the text, in the migrated ids' range.
    static func migratedUserID(hashing text: String) -> UserID {
        var value: UInt32 = 0x811c_9dc5
        for byte in text.utf8 {
            value ^= UInt32(byte)
            value &*= 0x0100_0193
        }
        return migratedUserIDBase | (value & 0x7fff_ffff)
    }

    // MARK: Handles and user ids

    /// Takes `count` new handles. The counter is committed before they are returned, so
    /// a handle is never given out twice, even across crashes. It also starts above every
    /// handle of this node's id that the store holds: a node restored from an older backup
    /// (or initialised again under its old id) has pulled from its peers keys it made after
    /// that backup, and must not give their handles out again.
    public func allocateHandles(_ count: Int) throws -> [KeyHandle] {
        try locked {
            try database.transaction {
                try database.query(
                    """
                    UPDATE meta SET handle_counter = max(handle_counter,
                        coalesce((SELECT max(handle >> 4) FROM keys WHERE (handle & 15) = ?), 0)) + ?
                    WHERE id = 1
                    """, [.integer(Int64(metadata.nodeID)), .integer(Int64(count))])
                guard
                    let last = try database.query("SELECT handle_counter FROM meta WHERE id = 1").first?.first?.integer
                else { throw StoreError("the handle counter is missing") }
                let first = UInt64(last) - UInt64(count) + 1
                return (0..<UInt64(count)).map { (first + $0) << 4 | UInt64(metadata.nodeID) }
            }
        }
    }

    /// Takes a new user id, unique in the cluster as handles are (`counter << 4 | nodeID`)
    /// and committed before it is returned, so no id is ever given out twice; like the
    /// handle counter, it starts above every id of this node that the store holds.
    public func allocateUserID() throws -> UserID {
        try locked {
            try database.transaction {
                try database.query(
                    """
                    UPDATE meta SET user_counter = max(user_counter,
                        coalesce((SELECT max(id >> 4) FROM users WHERE (id & 15) = ? AND id < ?), 0)) + 1
                    WHERE id = 1
                    """, [.integer(Int64(metadata.nodeID)), .integer(Int64(Self.migratedUserIDBase))])
                guard
                    let counter = try database.query("SELECT user_counter FROM meta WHERE id = 1").first?.first?.integer
                else { throw StoreError("the user counter is missing") }
                guard counter < Int64(Self.migratedUserIDBase >> 4) else {
                    throw StoreError("this node has given out every user id it may")
                }
                return UserID(counter) << 4 | UserID(metadata.nodeID)
            }
        }
    }

    // MARK: Keys

    private static let keyColumns =
        "handle, class, type, label, owner, extractable, size_bits, public_key_info, material, version, deleted"

    /// Every key record, tombstones included, in handle order.
    public func keyRecords() throws -> [KeyRecord] {
        try locked {
            try database.query("SELECT \(Self.keyColumns) FROM keys ORDER BY handle").map(Self.keyRecord)
        }
    }

    public func keyRecord(handle: KeyHandle) throws -> KeyRecord? {
        try locked {
            try database.query(
                "SELECT \(Self.keyColumns) FROM keys WHERE handle = ?", [.integer(Int64(bitPattern: handle))]
            ).first.map(Self.keyRecord)
        }
    }

    /// Stores `record` unless the store already holds the same or a newer version (see
    /// `RecordStamp`: the higher version wins, then a tombstone).
    ///
    /// - Returns: true when the record was written.
    @discardableResult
    public func apply(keyRecord record: KeyRecord) throws -> Bool {
        try apply(keyRecords: [record]) == 1
    }

    /// Applies several records in one transaction: all are on disk, or none.
    ///
    /// - Returns: how many were written (older versions are skipped).
    @discardableResult
    public func apply(keyRecords records: [KeyRecord]) throws -> Int {
        try applyReporting(keyRecords: records).filter { $0 }.count
    }

    /// As `apply(keyRecords:)`, saying for each record whether it was written.
    public func applyReporting(keyRecords records: [KeyRecord]) throws -> [Bool] {
        try locked {
            try database.transaction {
                try records.map { try applyInTransaction($0) }
            }
        }
    }

    private func applyInTransaction(_ record: KeyRecord) throws -> Bool {
        let handle = SQLiteValue.integer(Int64(bitPattern: record.handle))
        if let row = try database.query("SELECT version, deleted FROM keys WHERE handle = ?", [handle]).first,
            let version = row[0].integer, let deleted = row[1].integer,
            RecordStamp(version: UInt64(bitPattern: version), isDeleted: deleted != 0) >= record.stamp
        {
            return false
        }
        try database.query(
            "INSERT OR REPLACE INTO keys (\(Self.keyColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                handle, .integer(Int64(record.keyClass.rawValue)), .integer(Int64(record.keyType.rawValue)),
                .text(record.label), .integer(Int64(record.owner)), .integer(record.isExtractable ? 1 : 0),
                .integer(Int64(record.sizeInBits)), .blob(record.publicKeyInfo), .blob(record.sealedMaterial),
                .integer(Int64(bitPattern: record.version)), .integer(record.isDeleted ? 1 : 0),
            ])
        return true
    }

    /// Every key's stamp, tombstones included: what a peer compares against.
    public func keyStamps() throws -> [KeyHandle: RecordStamp] {
        try locked {
            var stamps: [KeyHandle: RecordStamp] = [:]
            for row in try database.query("SELECT handle, version, deleted FROM keys") {
                guard row.count == 3, let handle = row[0].integer, let version = row[1].integer,
                    let deleted = row[2].integer
                else { throw StoreError("a key row is damaged") }
                stamps[KeyHandle(bitPattern: handle)] = RecordStamp(
                    version: UInt64(bitPattern: version), isDeleted: deleted != 0)
            }
            return stamps
        }
    }

    /// The last handle counter given out: every handle this node made has a counter at or
    /// below it.
    public func handleCounter() throws -> UInt64 {
        try locked {
            guard let value = try database.query("SELECT handle_counter FROM meta WHERE id = 1").first?.first?.integer
            else { throw StoreError("the handle counter is missing") }
            return UInt64(value)
        }
    }

    private static func keyRecord(_ row: [SQLiteValue]) throws -> KeyRecord {
        guard row.count == 11, let handle = row[0].integer else { throw StoreError("a key row is damaged") }
        let what = "key \(handle)"
        guard let rawClass = row[1].integer, let keyClass = KeyClass(rawValue: UInt32(truncatingIfNeeded: rawClass)),
            let rawType = row[2].integer, let keyType = KeyType(rawValue: UInt32(truncatingIfNeeded: rawType)),
            let label = row[3].text, let owner = row[4].integer, let extractable = row[5].integer,
            let size = row[6].integer, let version = row[9].integer, let deleted = row[10].integer
        else { throw StoreError("the stored \(what) is damaged") }
        return KeyRecord(
            handle: KeyHandle(bitPattern: handle), keyClass: keyClass, keyType: keyType, label: label,
            owner: UserID(truncatingIfNeeded: owner), isExtractable: extractable != 0,
            sizeInBits: UInt32(truncatingIfNeeded: size), publicKeyInfo: row[7].blob ?? [],
            sealedMaterial: row[8].blob ?? [], version: UInt64(bitPattern: version), isDeleted: deleted != 0)
    }

    // MARK: Users

    private static let userColumns = "id, name, role, salt, hash, iterations, version, deleted"

    /// Every user record, tombstones included, in id order.
    public func userRecords() throws -> [UserRecord] {
        try locked {
            try database.query("SELECT \(Self.userColumns) FROM users ORDER BY id").map(Self.userRecord)
        }
    }

    public func userRecord(id: UserID) throws -> UserRecord? {
        try locked {
            try database.query("SELECT \(Self.userColumns) FROM users WHERE id = ?", [.integer(Int64(id))]).first.map(
                Self.userRecord)
        }
    }

    /// Every record of users that had `name`, the live one (if any) and tombstones, in id
    /// order.
    public func userRecords(named name: String) throws -> [UserRecord] {
        try locked {
            try database.query("SELECT \(Self.userColumns) FROM users WHERE name = ? ORDER BY id", [.text(name)]).map(
                Self.userRecord)
        }
    }

    /// The live user called `name`, if there is one.
    public func liveUser(named name: String) throws -> UserRecord? {
        try userRecords(named: name).first { !$0.isDeleted }
    }

    /// Stores `record` unless the store holds the same id in the same or a newer version
    /// (see `RecordStamp`).
    ///
    /// - Returns: true when the record was written.
    @discardableResult
    public func apply(userRecord record: UserRecord) throws -> Bool {
        try applyResolving(userRecord: record).isWritten
    }

    /// As `apply(userRecord:)`, and when two live users end up with one name (two nodes
    /// created it at once, or on both sides of a partition), keeps the lower id and
    /// deletes the others. Every node applies the same rule, so all keep the same id.
    /// Failed logins counted here against a deleted one now count against the one kept
    /// (as this node's failures, with the same tags), so guesses made on a node that had
    /// not yet heard of the lower id still count.
    public func applyResolving(userRecord record: UserRecord) throws -> UserApplication {
        try locked {
            try database.transaction {
                if let current = try database.query(
                    "SELECT \(Self.userColumns) FROM users WHERE id = ?", [.integer(Int64(record.id))]
                ).first.map(Self.userRecord), current.stamp >= record.stamp {
                    return UserApplication(isWritten: false, superseded: [])
                }
                try writeUser(record)
                guard !record.isDeleted else { return UserApplication(isWritten: true, superseded: []) }
                let live = try database.query(
                    "SELECT \(Self.userColumns) FROM users WHERE name = ? AND deleted = 0 ORDER BY id",
                    [.text(record.name)]
                ).map(Self.userRecord)
                var superseded: [UserRecord] = []
                for loser in live.dropFirst() {
                    superseded.append(loser.tombstone)
                    try writeUser(loser.tombstone)
                    let tags = try database.query(
                        "SELECT DISTINCT tag FROM login_failures WHERE user_id = ?", [.integer(Int64(loser.id))])
                    for tag in tags.compactMap({ $0.first?.integer }) {
                        try recordFailureInTransaction(userID: live[0].id, tag: UInt64(bitPattern: tag))
                    }
                }
                return UserApplication(isWritten: true, superseded: superseded)
            }
        }
    }

    private func writeUser(_ record: UserRecord) throws {
        try database.query(
            "INSERT OR REPLACE INTO users (\(Self.userColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                .integer(Int64(record.id)), .text(record.name), .integer(Int64(record.role.rawValue)),
                .blob(record.salt), .blob(record.passwordHash), .integer(Int64(record.iterations)),
                .integer(Int64(bitPattern: record.version)), .integer(record.isDeleted ? 1 : 0),
            ])
    }

    private static func userRecord(_ row: [SQLiteValue]) throws -> UserRecord {
        guard row.count == 8, let id = row[0].integer, let name = row[1].text, let rawRole = row[2].integer,
            let role = UserRole(rawValue: UInt8(truncatingIfNeeded: rawRole)), let salt = row[3].blob,
            let hash = row[4].blob, let iterations = row[5].integer, iterations >= 1, let version = row[6].integer,
            let deleted = row[7].integer
        else { throw StoreError("a stored user is damaged") }
        return UserRecord(
            id: UserID(truncatingIfNeeded: id), name: name, role: role, salt: salt, passwordHash: hash,
            iterations: Int(iterations), version: UInt64(bitPattern: version), isDeleted: deleted != 0)
    }

    // MARK: Failed logins

    /// How many distinct wrong passwords count against the user, cluster-wide as far as
    /// this node knows. Forgiven failures are pruned whenever a mark moves, so every
    /// stored failure counts.
    public func failedLoginCount(userID: UserID) throws -> Int {
        try locked {
            let rows = try database.query(
                "SELECT COUNT(DISTINCT tag) FROM login_failures WHERE user_id = ?", [.integer(Int64(userID))])
            return Int(rows.first?.first?.integer ?? 0)
        }
    }

    /// Counts a failed login on this node, unless the same wrong password (`tag`) already
    /// counts against the user.
    ///
    /// - Returns: true when it was counted.
    @discardableResult
    public func recordFailedLogin(userID: UserID, tag: UInt64) throws -> Bool {
        try locked {
            try database.transaction { try recordFailureInTransaction(userID: userID, tag: tag) }
        }
    }

    private func recordFailureInTransaction(userID: UserID, tag: UInt64) throws -> Bool {
        let user = SQLiteValue.integer(Int64(userID))
        let node = SQLiteValue.integer(Int64(metadata.nodeID))
        let seen = try database.query(
            "SELECT 1 FROM login_failures WHERE user_id = ? AND tag = ? LIMIT 1",
            [user, .integer(Int64(bitPattern: tag))])
        guard seen.isEmpty else { return false }
        try database.query(
            "INSERT INTO login_marks VALUES (?, ?, 1, 0) "
                + "ON CONFLICT (user_id, node_id) DO UPDATE SET counted = counted + 1", [user, node])
        guard
            let counted = try database.query(
                "SELECT counted FROM login_marks WHERE user_id = ? AND node_id = ?", [user, node]
            ).first?.first?.integer
        else { throw StoreError("the failed-login count is missing") }
        try database.query(
            "INSERT INTO login_failures VALUES (?, ?, ?, ?)",
            [user, node, .integer(counted), .integer(Int64(bitPattern: tag))])
        return true
    }

    /// Forgives every failure of the user this node knows of (a successful login, a new
    /// password): each node's forgiven mark moves up to its count.
    ///
    /// - Returns: true when something was forgiven.
    @discardableResult
    public func forgiveFailedLogins(userID: UserID) throws -> Bool {
        let user = SQLiteValue.integer(Int64(userID))
        return try locked {
            try database.transaction {
                try database.query(
                    "UPDATE login_marks SET forgiven = counted WHERE user_id = ? AND forgiven < counted", [user])
                let changed = database.changes > 0
                try database.query("DELETE FROM login_failures WHERE user_id = ?", [user])
                return changed
            }
        }
    }

    /// The user's log as this node holds it: what a peer merges.
    public func loginFailureLog(userID: UserID) throws -> LoginFailureLog {
        try locked { try logs(userID: userID).first ?? LoginFailureLog(userID: userID) }
    }

    /// The logs of every user that ever had a failed login.
    public func loginFailureLogs() throws -> [LoginFailureLog] {
        try locked { try logs(userID: nil) }
    }

    private func logs(userID: UserID?) throws -> [LoginFailureLog] {
        let filter = userID.map { " WHERE user_id = \(Int64($0))" } ?? ""
        var logs: [UserID: LoginFailureLog] = [:]
        for row in try database.query("SELECT user_id, node_id, counted, forgiven FROM login_marks" + filter) {
            guard row.count == 4, let user = row[0].integer, let node = row[1].integer, let counted = row[2].integer,
                let forgiven = row[3].integer
            else { throw StoreError("a failed-login mark is damaged") }
            let id = UserID(truncatingIfNeeded: user)
            logs[id, default: LoginFailureLog(userID: id)].marks.append(
                LoginMark(
                    node: UInt8(truncatingIfNeeded: node), counted: UInt64(bitPattern: counted),
                    forgiven: UInt64(bitPattern: forgiven)))
        }
        for row in try database.query("SELECT user_id, node_id, sequence, tag FROM login_failures" + filter) {
            guard row.count == 4, let user = row[0].integer, let node = row[1].integer, let sequence = row[2].integer,
                let tag = row[3].integer
            else { throw StoreError("a failed login is damaged") }
            let id = UserID(truncatingIfNeeded: user)
            logs[id, default: LoginFailureLog(userID: id)].failures.append(
                LoginFailure(
                    node: UInt8(truncatingIfNeeded: node), sequence: UInt64(bitPattern: sequence),
                    tag: UInt64(bitPattern: tag)))
        }
        return logs.keys.sorted().compactMap { logs[$0] }
    }

    /// Merges peers' logs: marks by maximum, failures by union, then drops what the marks
    /// forgive.
    ///
    /// - Returns: how many logs changed here.
    @discardableResult
    public func merge(loginFailures incoming: [LoginFailureLog]) throws -> Int {
        guard !incoming.isEmpty else { return 0 }
        return try locked {
            try database.transaction {
                var changedLogs = 0
                for log in incoming {
                    let user = SQLiteValue.integer(Int64(log.userID))
                    var changes = 0
                    var marks: [UInt8: LoginMark] = [:]
                    for mark in log.marks {
                        let merged = marks[mark.node].map {
                            LoginMark(
                                node: mark.node, counted: max($0.counted, mark.counted),
                                forgiven: max($0.forgiven, mark.forgiven))
                        }
                        marks[mark.node] = merged ?? mark
                    }
                    // A failure implies its node counted at least that far.
                    for failure in log.failures {
                        let mark = marks[failure.node] ?? LoginMark(node: failure.node, counted: 0, forgiven: 0)
                        marks[failure.node] = LoginMark(
                            node: failure.node, counted: max(mark.counted, failure.sequence), forgiven: mark.forgiven)
                    }
                    for mark in marks.values {
                        try database.query(
                            """
                            INSERT INTO login_marks VALUES (?, ?, ?, ?)
                            ON CONFLICT (user_id, node_id) DO UPDATE SET
                                counted = MAX(counted, excluded.counted), forgiven = MAX(forgiven, excluded.forgiven)
                            WHERE counted < excluded.counted OR forgiven < excluded.forgiven
                            """,
                            [
                                user, .integer(Int64(mark.node)), .integer(Int64(bitPattern: mark.counted)),
                                .integer(Int64(bitPattern: mark.forgiven)),
                            ])
                        changes += database.changes
                    }
                    for failure in log.failures {
                        try database.query(
                            """
                            INSERT OR IGNORE INTO login_failures
                                SELECT ?, ?, ?, ? WHERE ? > (SELECT forgiven FROM login_marks
                                                             WHERE user_id = ? AND node_id = ?)
                            """,
                            [
                                user, .integer(Int64(failure.node)), .integer(Int64(bitPattern: failure.sequence)),
                                .integer(Int64(bitPattern: failure.tag)), .integer(Int64(bitPattern: failure.sequence)),
                                user, .integer(Int64(failure.node)),
                            ])
                        changes += database.changes
                    }
                    try database.query(
                        """
                        DELETE FROM login_failures WHERE user_id = ? AND sequence <= (
                            SELECT forgiven FROM login_marks m
                            WHERE m.user_id = login_failures.user_id AND m.node_id = login_failures.node_id)
                        """, [user])
                    changes += database.changes
                    if changes > 0 { changedLogs += 1 }
                }
                return changedLogs
            }
        }
    }
}
