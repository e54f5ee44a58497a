// The durable store: keys survive a restart, material is encrypted at rest and bound to
// its handle, handles never repeat, damaged data is refused at start, and a schema-1
// store (users and owners by name) is migrated to user ids.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMNode

final class NodeStoreTests: XCTestCase {
    func testKeysAndUsersSurviveReopen() throws {
        let node = try TestNode()
        var alice = node.userSession("alice")
        let aes = node.handler.ok(
            .generateSymmetricKey(keyType: .aes, byteCount: 32, label: "wrap", isSession: false, isExtractable: true),
            &alice
        ).handle
        let pair = node.handler.ok(
            .generateRSAKeyPair(
                modulusBits: 2048, publicExponent: 65537, label: "web", isSession: false, isExtractable: false),
            &alice
        ).pair
        let digest = try Digest.hash([1], algorithm: .sha256, context: sharedContext)
        let signature = node.handler.ok(
            .sign(key: try XCTUnwrap(pair?.privateKey), mechanism: .pkcs1(digest: .sha256), data: digest), &alice
        ).bytes

        try node.reopen()
        var again = node.handler.openSession()
        XCTAssertEqual(
            node.handler.code(.login(role: .cryptoUser, user: "alice", password: "user-pw"), &again), .success)
        let found = node.handler.ok(.findKeys(KeyFilter()), &again).handles
        XCTAssertEqual(found, [try XCTUnwrap(aes), pair!.publicKey, pair!.privateKey].sorted())
        // The reloaded key is the same key: PKCS#1 v1.5 signatures are deterministic.
        XCTAssertEqual(
            node.handler.ok(.sign(key: pair!.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), &again)
                .bytes,
            signature)
        guard case .attributes(let attributes) = node.handler.ok(.getAttributes(pair!.privateKey), &again) else {
            return XCTFail("no attributes")
        }
        XCTAssertEqual(attributes.label, "web")
        XCTAssertEqual(attributes.keyClass, .privateKey)
        XCTAssertFalse(attributes.isExtractable)
        XCTAssertTrue(attributes.isToken)
        XCTAssertEqual(attributes.sizeInBits, 2048)
    }

    func testMaterialIsEncryptedAtRest() throws {
        let node = try TestNode()
        var alice = node.userSession("alice")
        let handle = try XCTUnwrap(
            node.handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 32, label: "k", isSession: false, isExtractable: true),
                &alice
            ).handle)
        let pair = try XCTUnwrap(
            node.handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "r", isSession: false, isExtractable: true),
                &alice
            ).pair)
        // Export both wrapped under the AES key itself, to learn their plaintext.
        let wrappedAES = try XCTUnwrap(node.handler.ok(.wrapKey(key: handle, wrappingKey: handle), &alice).bytes)
        guard case .secret(let kek) = try XCTUnwrap(node.state.object(handle, sessionID: alice.id)).material else {
            return XCTFail("not a secret")
        }
        XCTAssertEqual(try AESKeyWrap.unwrap(wrappedKey: wrappedAES, kek: kek, context: sharedContext), kek)
        let wrappedRSA = try XCTUnwrap(
            node.handler.ok(.wrapKey(key: pair.privateKey, wrappingKey: handle), &alice).bytes)
        let pkcs8 = try AESKeyWrap.unwrap(wrappedKey: wrappedRSA, kek: kek, context: sharedContext)

        let records = try node.state.store.keyRecords()
        let aesRecord = try XCTUnwrap(records.first { $0.handle == handle })
        XCTAssertNotEqual(aesRecord.sealedMaterial, kek)
        XCTAssertFalse(contains(aesRecord.sealedMaterial, kek))
        // Nowhere in the database files does the plaintext appear.
        var fileBytes: [UInt8] = []
        for name in ["node.sqlite", "node.sqlite-wal"] {
            if let data = FileManager.default.contents(atPath: node.directory + "/" + name) {
                fileBytes += [UInt8](data)
            }
        }
        XCTAssertFalse(fileBytes.isEmpty)
        XCTAssertFalse(contains(fileBytes, kek))
        // The tail of PKCS#8 is the CRT coefficient: private, unlike the modulus at its start.
        XCTAssertFalse(contains(fileBytes, Array(pkcs8.suffix(48))))
        XCTAssertTrue(contains(fileBytes, Array(pkcs8[40..<80])), "the public modulus is stored in the clear")
        // Public key objects carry no material at all.
        XCTAssertEqual(records.first { $0.handle == pair.publicKey }?.sealedMaterial, [])
    }

    func testSwappedMaterialIsRefusedAtStart() throws {
        let node = try TestNode()
        var alice = node.userSession("alice")
        let a = try XCTUnwrap(
            node.handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "a", isSession: false, isExtractable: true),
                &alice
            ).handle)
        let b = try XCTUnwrap(
            node.handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "b", isSession: false, isExtractable: true),
                &alice
            ).handle)
        var recordA = try XCTUnwrap(try node.state.store.keyRecord(handle: a))
        let recordB = try XCTUnwrap(try node.state.store.keyRecord(handle: b))
        recordA.sealedMaterial = recordB.sealedMaterial
        recordA.version += 1
        try node.state.store.apply(keyRecord: recordA)
        XCTAssertThrowsError(try node.reopen()) { XCTAssertTrue("\($0)".contains("cannot be decrypted"), "\($0)") }
    }

    func testHandlesCarryNodeIDAndNeverRepeat() throws {
        let node = try TestNode(nodeID: 7)
        var seen = Set<KeyHandle>()
        for _ in 0..<3 {
            var alice = node.userSession("alice")
            for isSession in [false, true] {
                let handle = try XCTUnwrap(
                    node.handler.ok(
                        .generateSymmetricKey(
                            keyType: .genericSecret, byteCount: 8, label: "", isSession: isSession, isExtractable: false
                        ),
                        &alice
                    ).handle)
                XCTAssertEqual(handle & 0xF, 7)
                XCTAssertTrue(seen.insert(handle).inserted)
            }
            try node.reopen()
        }
        let handles = try node.state.store.allocateHandles(2)
        XCTAssertEqual(handles[1], handles[0] + 16)
        XCTAssertFalse(seen.contains(handles[0]))
    }

    /// A node restored from an older backup pulls from its peers the keys and users it
    /// made after that backup: its counters must not give their handles and ids out again.
    func testCountersStartAboveWhatTheStoreHoldsOfThisNode() throws {
        let node = try TestNode(nodeID: 3)
        let store = node.state.store
        let counter = try store.handleCounter()
        let pulled = KeyRecord(
            handle: (counter + 5) << 4 | 3, keyClass: .publicKey, keyType: .rsa, label: "made after the backup",
            owner: 0x13, isExtractable: true, sizeInBits: 2048, publicKeyInfo: [1], sealedMaterial: [], version: 1,
            isDeleted: false)
        let otherNode = KeyRecord(
            handle: (counter + 50) << 4 | 4, keyClass: .publicKey, keyType: .rsa, label: "node 4's", owner: 0x13,
            isExtractable: true, sizeInBits: 2048, publicKeyInfo: [2], sealedMaterial: [], version: 1,
            isDeleted: false)
        try store.apply(keyRecords: [pulled, otherNode])
        XCTAssertEqual(try store.allocateHandles(1), [(counter + 6) << 4 | 3])

        let first = try store.allocateUserID()
        let later = UserRecord(
            id: first + 16 * 9, name: "made-after-the-backup", role: .cryptoUser, salt: [1], passwordHash: [2],
            iterations: 1, version: 1, isDeleted: false)
        try store.apply(userRecord: later)
        XCTAssertEqual(try store.allocateUserID(), later.id + 16)
    }

    func testNewerVersionWins() throws {
        let node = try TestNode()
        let record = KeyRecord(
            handle: 0x1230 | 2, keyClass: .publicKey, keyType: .rsa, label: "v2", owner: 0x15, isExtractable: true,
            sizeInBits: 2048, publicKeyInfo: [1], sealedMaterial: [], version: 2, isDeleted: false)
        XCTAssertTrue(try node.state.store.apply(keyRecord: record))
        var older = record
        older.version = 1
        older.label = "v1"
        XCTAssertFalse(try node.state.store.apply(keyRecord: older))
        XCTAssertEqual(try node.state.store.keyRecord(handle: record.handle)?.label, "v2")
        var tombstone = record
        tombstone.version = 3
        tombstone.isDeleted = true
        XCTAssertTrue(try node.state.store.apply(keyRecord: tombstone))
        XCTAssertEqual(try node.state.store.keyRecord(handle: record.handle)?.isDeleted, true)
    }

    func testDamagedFilesAreClearErrors() throws {
        let node = try TestNode()
        let masterPath = node.directory + "/master.key"
        let attributes = try FileManager.default.attributesOfItem(atPath: masterPath)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: masterPath))
        XCTAssertThrowsError(try node.reopen()) { XCTAssertTrue("\($0)".contains("master key"), "\($0)") }

        let other = try TestNode()
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: other.directory + "/node.sqlite"))
        try? FileManager.default.removeItem(atPath: other.directory + "/node.sqlite-wal")
        XCTAssertThrowsError(try other.reopen()) { XCTAssertTrue("\($0)".contains("node.sqlite"), "\($0)") }

        XCTAssertThrowsError(try NodeState(directory: "/nonexistent/hsm", context: sharedContext)) {
            XCTAssertTrue("\($0)".contains("hsmd init"), "\($0)")
        }
        XCTAssertThrowsError(
            try NodeState.initialize(
                directory: node.directory, nodeID: 1, clusterID: "c", coPassword: "p", passwordIterations: 1,
                context: sharedContext))
    }

    /// A schema-1 store as the previous hsmd wrote it, in place of `node`'s, with the
    /// users and key owners given by name.
    private func writeSchema1Store(
        _ node: TestNode, nodeID: UInt8,
        users: [(id: Int64, name: String, role: UserRole, failed: Int64, deleted: Bool)],
        keys: [(handle: KeyHandle, owner: String, secret: [UInt8]?)]
    ) throws {
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(atPath: node.directory + "/node.sqlite" + suffix)
        }
        let database = try SQLiteDatabase(path: node.directory + "/node.sqlite", create: true)
        try database.execute(
            """
            CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), schema_version INTEGER NOT NULL,
                node_id INTEGER NOT NULL, cluster_id TEXT NOT NULL, handle_counter INTEGER NOT NULL,
                password_iterations INTEGER NOT NULL);
            CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role INTEGER NOT NULL,
                salt BLOB NOT NULL, hash BLOB NOT NULL, iterations INTEGER NOT NULL,
                failed_logins INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE keys (handle INTEGER PRIMARY KEY, class INTEGER NOT NULL, type INTEGER NOT NULL,
                label TEXT NOT NULL, owner TEXT NOT NULL, extractable INTEGER NOT NULL, size_bits INTEGER NOT NULL,
                public_key_info BLOB, material BLOB, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
            """)
        try database.query(
            "INSERT INTO meta VALUES (1, 1, ?, 'test-cluster', 16, 10)", [.integer(Int64(nodeID))])
        for user in users {
            let salt: [UInt8] = user.deleted ? [] : [UInt8](repeating: 7, count: 16)
            let password = user.role == .cryptoOfficer ? "officer-pw" : "\(user.name)-pw"
            let hash =
                user.deleted
                ? []
                : try PasswordHash.pbkdf2SHA256(
                    password: Array(password.utf8), salt: salt, iterations: 10, length: 32, context: sharedContext)
            try database.query(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, 10, ?, ?, ?)",
                [
                    .integer(user.id), .text(user.name), .integer(Int64(user.role.rawValue)), .blob(salt), .blob(hash),
                    .integer(user.failed), .integer(user.deleted ? 2 : 1), .integer(user.deleted ? 1 : 0),
                ])
        }
        for key in keys {
            let sealed = try key.secret.map {
                try AESGCM.seal(
                    plaintext: $0, key: node.state.masterKey, additionalData: node.state.additionalData(key.handle),
                    context: sharedContext)
            }
            try database.query(
                "INSERT INTO keys VALUES (?, ?, ?, 'old', ?, 0, 128, ?, ?, 1, 0)",
                [
                    .integer(Int64(key.handle)), .integer(Int64(KeyClass.secretKey.rawValue)),
                    .integer(Int64(KeyType.aes.rawValue)), .text(key.owner), .blob([]), .blob(sealed ?? [0]),
                ])
        }
    }

    func testSchema1StoreIsMigratedToUserIDs() throws {
        let node = try TestNode(nodeID: 3)
        let secret = [UInt8](repeating: 0x5a, count: 16)
        try writeSchema1Store(
            node, nodeID: 3,
            users: [
                (1, "admin", .cryptoOfficer, 0, false), (2, "bob", .cryptoUser, 2, false),
                (3, "carol", .cryptoUser, 0, true),
            ],
            keys: [(0x13, "bob", secret), (0x23, "carol", secret), (0x33, "zed", secret)])
        try node.reopen()

        var officer = node.officerSession()
        guard case .users(let users) = node.handler.ok(.listUsers, &officer) else { return XCTFail("no users") }
        let ids = NodeStore.migratedUserIDs(for: ["admin", "bob", "carol", "zed"])
        XCTAssertEqual(users.map(\.name), ["admin", "bob"])
        XCTAssertEqual(users.map(\.id), [NodeStore.initialOfficerID, try XCTUnwrap(ids["bob"])])
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(ids["bob"]), 0x8000_0000)
        XCTAssertEqual(users[1].failedLogins, 2, "this node's failures carried over")

        // bob keeps his key, and only his.
        var bob = node.handler.openSession()
        XCTAssertEqual(node.handler.code(.login(role: .cryptoUser, user: "bob", password: "bob-pw"), &bob), .success)
        XCTAssertEqual(node.handler.ok(.findKeys(KeyFilter()), &bob).handles, [0x13])
        guard case .attributes(let attributes) = node.handler.ok(.getAttributes(0x13), &bob) else {
            return XCTFail("no attributes")
        }
        XCTAssertEqual(attributes.owner, ids["bob"])
        // Keys of the deleted carol and of the vanished zed belong to ids no live user has.
        let owners = Dictionary(uniqueKeysWithValues: try node.state.store.keyRecords().map { ($0.handle, $0.owner) })
        XCTAssertEqual(owners[0x23], ids["carol"])
        XCTAssertEqual(owners[0x33], ids["zed"])
        XCTAssertEqual(try node.state.store.userRecord(id: try XCTUnwrap(ids["carol"]))?.isDeleted, true)
        XCTAssertFalse(users.contains { [owners[0x23], owners[0x33]].contains($0.id) })
        XCTAssertEqual(node.handler.code(.getAttributes(0x23), &bob), .keyAccessDenied)

        // A new carol is a new user with a counter id, and does not get the old carol's key.
        XCTAssertEqual(
            node.handler.code(.createUser(role: .cryptoUser, name: "carol", password: "pw"), &officer), .success)
        let newCarol = try XCTUnwrap(node.handler.userID("carol", &officer))
        XCTAssertEqual(newCarol, 1 << 4 | 3)
        var carol = node.handler.openSession()
        XCTAssertEqual(node.handler.code(.login(role: .cryptoUser, user: "carol", password: "pw"), &carol), .success)
        XCTAssertEqual(node.handler.ok(.findKeys(KeyFilter()), &carol).handles, [])

        // Migrated once: it opens again as schema 2.
        try node.reopen()
        var again = node.officerSession()
        XCTAssertEqual(node.handler.userID("bob", &again), ids["bob"])
    }

    func testNodesMigratingAloneAgreeOnIDs() throws {
        // The same users, with different schema-1 ids on each node, get the same ids.
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        try writeSchema1Store(
            a, nodeID: 1, users: [(1, "admin", .cryptoOfficer, 0, false), (2, "bob", .cryptoUser, 0, false)],
            keys: [(0x11, "bob", [1])])
        try writeSchema1Store(
            b, nodeID: 2,
            users: [
                (1, "admin", .cryptoOfficer, 0, false), (5, "ann", .cryptoUser, 0, false),
                (9, "bob", .cryptoUser, 0, false),
            ],
            keys: [(0x11, "bob", [1])])
        try a.reopen()
        try b.reopen()
        let bobA = try XCTUnwrap(a.state.store.liveUser(named: "bob"))
        let bobB = try XCTUnwrap(b.state.store.liveUser(named: "bob"))
        XCTAssertEqual(bobA.id, bobB.id)
        XCTAssertEqual(try a.state.store.keyRecord(handle: 0x11)?.owner, bobA.id)
        XCTAssertEqual(try b.state.store.keyRecord(handle: 0x11)?.owner, bobA.id)
        // Two names whose hashes collide (found offline by a birthday search): the later
        // name in order hashes again, so every node gives both the same two different ids.
        let (first, second) = ("xigzoodg", "ygbdjhkn")
        XCTAssertEqual(NodeStore.migratedUserID(hashing: first), NodeStore.migratedUserID(hashing: second))
        let ids = NodeStore.migratedUserIDs(for: [first, second])
        XCTAssertEqual(Set(ids.values).count, 2)
        XCTAssertEqual(ids[first], NodeStore.migratedUserID(hashing: first))
        XCTAssertEqual(ids, NodeStore.migratedUserIDs(for: [second, first, "admin"]).filter { $0.key != "admin" })
    }

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count, !needle.isEmpty else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<start + needle.count].elementsEqual(needle) { return true }
        }
        return false
    }
}
