// The node's durable store: one SQLite file in WAL mode with synchronous=FULL, so a
// commit that returned is on disk and survives kill -9. Keys and users are versioned
// records with tombstones, shaped so that a peer's record can later be applied as is.

import CloudHSMCore
import Foundation

/// One key object as stored. Secret material is sealed under the node's master key.
public struct KeyRecord: Equatable, Sendable {
    public var handle: KeyHandle
    public var keyClass: KeyClass
    public var keyType: KeyType
    public var label: String
    public var owner: String
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

/// One user as stored. Only a salted PBKDF2 hash of the password is kept.
public struct UserRecord: Equatable, Sendable {
    public var id: UInt32
    public var name: String
    public var role: UserRole
    public var salt: [UInt8]
    public var passwordHash: [UInt8]
    public var iterations: Int
    public var failedLogins: UInt32
    public var version: UInt64
    public var isDeleted: Bool
}

extension UserRecord {
    /// Where this version stands against others of the same name. Two nodes that took the
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
    static let schemaVersion: Int64 = 1
    static let fileName = "node.sqlite"

    private let database: SQLiteDatabase
    private let lock = NSLock()
    public let metadata: NodeMetadata

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
                    password_iterations INTEGER NOT NULL);
                CREATE TABLE users (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    role INTEGER NOT NULL,
                    salt BLOB NOT NULL,
                    hash BLOB NOT NULL,
                    iterations INTEGER NOT NULL,
                    failed_logins INTEGER NOT NULL DEFAULT 0,
                    version INTEGER NOT NULL,
                    deleted INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE keys (
                    handle INTEGER PRIMARY KEY,
                    class INTEGER NOT NULL,
                    type INTEGER NOT NULL,
                    label TEXT NOT NULL,
                    owner TEXT NOT NULL,
                    extractable INTEGER NOT NULL,
                    size_bits INTEGER NOT NULL,
                    public_key_info BLOB,
                    material BLOB,
                    version INTEGER NOT NULL,
                    deleted INTEGER NOT NULL DEFAULT 0);
                """)
            try database.query(
                "INSERT INTO meta VALUES (1, ?, ?, ?, 0, ?)",
                [
                    .integer(schemaVersion), .integer(Int64(nodeID)), .text(clusterID),
                    .integer(Int64(passwordIterations)),
                ])
        }
        return try NodeStore(database: database)
    }

    /// Opens the store of an initialised node.
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
        guard let row = rows.first, row.count == 4, let schema = row[0].integer, let nodeID = row[1].integer,
            let clusterID = row[2].text, let iterations = row[3].integer
        else { throw StoreError("\(database.path): the node metadata is missing or damaged") }
        guard schema == NodeStore.schemaVersion else {
            throw StoreError("\(database.path): schema version \(schema), this hsmd reads \(NodeStore.schemaVersion)")
        }
        guard (0...15).contains(nodeID), iterations >= 1 else {
            throw StoreError("\(database.path): the node metadata is damaged (node id \(nodeID))")
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

    // MARK: Handles

    /// Takes `count` new handles. The counter is committed before they are returned, so
    /// a handle is never given out twice, even across crashes.
    public func allocateHandles(_ count: Int) throws -> [KeyHandle] {
        try locked {
            try database.transaction {
                try database.query(
                    "UPDATE meta SET handle_counter = handle_counter + ? WHERE id = 1", [.integer(Int64(count))])
                guard
                    let last = try database.query("SELECT handle_counter FROM meta WHERE id = 1").first?.first?.integer
                else { throw StoreError("the handle counter is missing") }
                let first = UInt64(last) - UInt64(count) + 1
                return (0..<UInt64(count)).map { (first + $0) << 4 | UInt64(metadata.nodeID) }
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
                .text(record.label), .text(record.owner), .integer(record.isExtractable ? 1 : 0),
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
            let label = row[3].text, let owner = row[4].text, let extractable = row[5].integer,
            let size = row[6].integer, let version = row[9].integer, let deleted = row[10].integer
        else { throw StoreError("the stored \(what) is damaged") }
        return KeyRecord(
            handle: KeyHandle(bitPattern: handle), keyClass: keyClass, keyType: keyType, label: label, owner: owner,
            isExtractable: extractable != 0, sizeInBits: UInt32(truncatingIfNeeded: size),
            publicKeyInfo: row[7].blob ?? [], sealedMaterial: row[8].blob ?? [],
            version: UInt64(bitPattern: version), isDeleted: deleted != 0)
    }

    // MARK: Users

    private static let userColumns = "id, name, role, salt, hash, iterations, failed_logins, version, deleted"

    /// Every user record, tombstones included, in id order.
    public func userRecords() throws -> [UserRecord] {
        try locked {
            try database.query("SELECT \(Self.userColumns) FROM users ORDER BY id").map(Self.userRecord)
        }
    }

    public func userRecord(name: String) throws -> UserRecord? {
        try locked {
            try database.query("SELECT \(Self.userColumns) FROM users WHERE name = ?", [.text(name)]).first.map(
                Self.userRecord)
        }
    }

    /// The id a new user gets: one past the highest ever used.
    public func nextUserID() throws -> UInt32 {
        try locked {
            let highest = try database.query("SELECT MAX(id) FROM users").first?.first?.integer ?? 0
            return UInt32(truncatingIfNeeded: highest + 1)
        }
    }

    /// Stores `record` unless the same name holds the same or a newer version (see
    /// `RecordStamp`). Names identify users across the cluster; ids are this node's own,
    /// so a record whose id another name holds here gets the next free id instead.
    @discardableResult
    public func apply(userRecord record: UserRecord) throws -> Bool {
        try locked {
            try database.transaction {
                if let current = try database.query(
                    "SELECT \(Self.userColumns) FROM users WHERE name = ?", [.text(record.name)]
                ).first.map(Self.userRecord), current.stamp >= record.stamp {
                    return false
                }
                var id = Int64(record.id)
                if let holder = try database.query("SELECT name FROM users WHERE id = ?", [.integer(id)]).first?
                    .first?.text, holder != record.name
                {
                    id = (try database.query("SELECT MAX(id) FROM users").first?.first?.integer ?? 0) + 1
                }
                try database.query("DELETE FROM users WHERE name = ?", [.text(record.name)])
                try database.query(
                    "INSERT INTO users (\(Self.userColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        .integer(id), .text(record.name), .integer(Int64(record.role.rawValue)),
                        .blob(record.salt), .blob(record.passwordHash), .integer(Int64(record.iterations)),
                        .integer(Int64(record.failedLogins)), .integer(Int64(bitPattern: record.version)),
                        .integer(record.isDeleted ? 1 : 0),
                    ])
                return true
            }
        }
    }

    /// Counts a failed login; this node's own bookkeeping, not a new version of the user.
    /// - Returns: the new count.
    @discardableResult
    public func recordFailedLogin(name: String) throws -> UInt32 {
        try locked {
            try database.transaction {
                try database.query("UPDATE users SET failed_logins = failed_logins + 1 WHERE name = ?", [.text(name)])
                let count = try database.query("SELECT failed_logins FROM users WHERE name = ?", [.text(name)])
                return UInt32(truncatingIfNeeded: count.first?.first?.integer ?? 0)
            }
        }
    }

    public func resetFailedLogins(name: String) throws {
        try locked {
            _ = try database.query(
                "UPDATE users SET failed_logins = 0 WHERE name = ? AND failed_logins != 0", [.text(name)])
        }
    }

    private static func userRecord(_ row: [SQLiteValue]) throws -> UserRecord {
        guard row.count == 9, let id = row[0].integer, let name = row[1].text, let rawRole = row[2].integer,
            let role = UserRole(rawValue: UInt8(truncatingIfNeeded: rawRole)), let salt = row[3].blob,
            let hash = row[4].blob, let iterations = row[5].integer, iterations >= 1, let failed = row[6].integer,
            let version = row[7].integer, let deleted = row[8].integer
        else { throw StoreError("a stored user is damaged") }
        return UserRecord(
            id: UInt32(truncatingIfNeeded: id), name: name, role: role, salt: salt, passwordHash: hash,
            iterations: Int(iterations), failedLogins: UInt32(truncatingIfNeeded: failed),
            version: UInt64(bitPattern: version), isDeleted: deleted != 0)
    }
}
