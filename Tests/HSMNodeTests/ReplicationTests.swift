// Replication without a network: the merge order of record versions, the sync plan, the
// store's apply rules, creation with min_nodes, 0xbc for keys not yet here, users taken
// from peers, the peer messages' encoding and sealing, and the new hsmd flags.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMNode

/// Delivers pushes straight into other nodes' states, as the Replicator would over TLS.
final class LoopbackReplication: ReplicationHook, @unchecked Sendable {
    let minNodes: Int
    var peers: [NodeState]
    var isReachable = true
    var missing: MissingKey = .absent
    private(set) var lookUps: [KeyHandle] = []

    init(minNodes: Int, peers: [NodeState]) {
        self.minNodes = minNodes
        self.peers = peers
    }

    func push(_ records: PeerRecords, waitFor needed: Int?) -> Int {
        guard isReachable else { return 0 }
        return peers.filter { (try? $0.applyReplicated(records)) != nil }.count
    }

    func lookUpMissing(_ handle: KeyHandle) -> MissingKey {
        lookUps.append(handle)
        return missing
    }
}

final class ReplicationTests: XCTestCase {
    // MARK: Merge order and sync plan

    func testStampOrder() {
        let live1 = RecordStamp(version: 1, isDeleted: false)
        let dead1 = RecordStamp(version: 1, isDeleted: true)
        let live2 = RecordStamp(version: 2, isDeleted: false)
        XCTAssertLessThan(live1, dead1, "a tombstone beats a live record of the same version")
        XCTAssertLessThan(dead1, live2, "a higher version beats anything older")
        XCTAssertLessThan(
            RecordStamp(version: 3, isDeleted: false, fingerprint: 5),
            RecordStamp(version: 3, isDeleted: false, fingerprint: 9))
        XCTAssertFalse(live1 < live1)
    }

    func testSyncPlanFetchesWhatIsMissingOrOlder() {
        let local = PeerInventory(
            handleCounter: 0,
            keys: [
                0x11: RecordStamp(version: 1, isDeleted: false),  // same as remote
                0x21: RecordStamp(version: 1, isDeleted: false),  // remote deleted it
                0x31: RecordStamp(version: 3, isDeleted: true),  // local is newer
            ],
            users: ["alice": RecordStamp(version: 2, isDeleted: false, fingerprint: 1)])
        let remote = PeerInventory(
            handleCounter: 9,
            keys: [
                0x11: RecordStamp(version: 1, isDeleted: false),
                0x21: RecordStamp(version: 2, isDeleted: true),
                0x31: RecordStamp(version: 1, isDeleted: false),
                0x41: RecordStamp(version: 1, isDeleted: false),  // new
            ],
            users: [
                "alice": RecordStamp(version: 2, isDeleted: false, fingerprint: 7),  // same version, wins the tie
                "bob": RecordStamp(version: 1, isDeleted: false),
            ])
        let wanted = SyncPlan.wanted(local: local, remote: remote)
        XCTAssertEqual(wanted.keys, [0x21, 0x41])
        XCTAssertEqual(wanted.users, ["alice", "bob"])
        // Two nodes that hold the same things want nothing from each other.
        XCTAssertTrue(SyncPlan.wanted(local: remote, remote: remote).keys.isEmpty)
        XCTAssertTrue(SyncPlan.wanted(local: remote, remote: local).users.isEmpty)
    }

    // MARK: Store rules

    func testStoreKeepsTheWinningVersion() throws {
        let node = try TestNode(nodeID: 1)
        let store = node.state.store
        var record = KeyRecord(
            handle: 0x21, keyClass: .publicKey, keyType: .rsa, label: "l", owner: "o", isExtractable: true,
            sizeInBits: 2048, publicKeyInfo: [1], sealedMaterial: [], version: 1, isDeleted: false)
        XCTAssertTrue(try store.apply(keyRecord: record))
        XCTAssertFalse(try store.apply(keyRecord: record), "the same version twice is written once")
        record.isDeleted = true
        XCTAssertTrue(try store.apply(keyRecord: record), "a tombstone of the same version wins")
        record.isDeleted = false
        XCTAssertFalse(try store.apply(keyRecord: record), "a live record never revives its own tombstone")
        record.version = 2
        XCTAssertTrue(try store.apply(keyRecord: record))
        XCTAssertEqual(try store.keyStamps()[0x21], RecordStamp(version: 2, isDeleted: false))
    }

    func testUserIDsAreLocalAndNamesDecide() throws {
        let node = try TestNode(nodeID: 1)
        let store = node.state.store
        func user(_ name: String, id: UInt32, version: UInt64, salt: UInt8) -> UserRecord {
            UserRecord(
                id: id, name: name, role: .cryptoUser, salt: [salt], passwordHash: [1, 2], iterations: 10,
                failedLogins: 0, version: version, isDeleted: false)
        }
        XCTAssertTrue(try store.apply(userRecord: user("carol", id: 2, version: 1, salt: 1)))
        // Another node gave id 2 to alice: carol stays, alice gets a free id here.
        XCTAssertTrue(try store.apply(userRecord: user("alice", id: 2, version: 1, salt: 1)))
        let names = try store.userRecords().map(\.name)
        XCTAssertTrue(names.contains("carol") && names.contains("alice"), "\(names)")
        XCTAssertEqual(Set(try store.userRecords().map(\.id)).count, 3)
        // Equal versions with different salts: every node keeps the same one.
        let a = user("dave", id: 9, version: 1, salt: 1)
        let b = user("dave", id: 9, version: 1, salt: 2)
        let winner = a.stamp < b.stamp ? b : a
        let loser = a.stamp < b.stamp ? a : b
        XCTAssertTrue(try store.apply(userRecord: loser))
        XCTAssertTrue(try store.apply(userRecord: winner))
        XCTAssertFalse(try store.apply(userRecord: loser))
        XCTAssertEqual(try store.userRecord(name: "dave")?.salt, winner.salt)
    }

    // MARK: Nodes replicating

    func testCreatedKeysReachPeersUnderTheSameHandle() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        let hook = LoopbackReplication(minNodes: 2, peers: [b.state])
        a.state.replication = hook
        var userA = a.userSession("cu")
        var userB = b.userSession("cu")
        let pair = try XCTUnwrap(
            a.handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "r", isSession: false, isExtractable: false),
                &userA
            ).pair)
        XCTAssertEqual(pair.privateKey & 0xF, 1)
        let digest = [UInt8](repeating: 7, count: 32)
        let sign = HSMRequest.sign(key: pair.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest)
        XCTAssertEqual(a.handler.ok(sign, &userA), b.handler.ok(sign, &userB))
        XCTAssertEqual(
            b.handler.ok(.findKeys(KeyFilter(label: "r")), &userB).handles, [pair.publicKey, pair.privateKey])
        // Material is sealed under each node's own master key, not copied as stored.
        XCTAssertNotEqual(
            try a.state.store.keyRecord(handle: pair.privateKey)?.sealedMaterial,
            try b.state.store.keyRecord(handle: pair.privateKey)?.sealedMaterial)

        // A delete on the peer comes back as a tombstone.
        b.state.replication = LoopbackReplication(minNodes: 2, peers: [a.state])
        _ = b.handler.ok(.deleteKey(pair.privateKey), &userB)
        XCTAssertEqual(a.handler.code(.getAttributes(pair.privateKey), &userA), .invalidHandle)

        // Session keys never leave their node.
        let session = try XCTUnwrap(
            a.handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "s", isSession: true, isExtractable: true),
                &userA
            ).handle)
        XCTAssertNil(try b.state.store.keyRecord(handle: session))
    }

    func testCreationBelowMinNodesFailsAndLeavesNoKey() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        let hook = LoopbackReplication(minNodes: 2, peers: [b.state])
        hook.isReachable = false
        a.state.replication = hook
        var user = a.userSession("cu")
        let request = HSMRequest.generateSymmetricKey(
            keyType: .aes, byteCount: 32, label: "lonely", isSession: false, isExtractable: true)
        XCTAssertEqual(a.handler.code(request, &user), .insufficientNodes)
        XCTAssertEqual(a.handler.ok(.findKeys(KeyFilter(label: "lonely")), &user).handles, [])
        XCTAssertTrue(try a.state.store.keyRecords().allSatisfy(\.isDeleted), "only a tombstone remains")
        // Still gone after a restart: the tombstone is on disk.
        try a.reopen()
        var again = a.userSession("cu")
        XCTAssertEqual(a.handler.ok(.findKeys(KeyFilter(label: "lonely")), &again).handles, [])
        // Session keys need no other node.
        a.state.replication = hook
        XCTAssertEqual(
            a.handler.code(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "s", isSession: true, isExtractable: true),
                &again), .success)
        // min_nodes 1 needs no peer.
        a.state.replication = LoopbackReplication(minNodes: 1, peers: [])
        XCTAssertEqual(a.handler.code(request, &again), .success)
    }

    func testPullBringsAMissedKeyAndMissingKeysAreAskedFor() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        var userA = a.userSession("cu")
        var userB = b.userSession("cu")
        // Made while b was away.
        let handle = try XCTUnwrap(
            a.handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 32, label: "k", isSession: false, isExtractable: true),
                &userA
            ).handle)
        let hook = LoopbackReplication(minNodes: 2, peers: [])
        b.state.replication = hook
        hook.missing = .notReplicated
        XCTAssertEqual(b.handler.code(.getAttributes(handle), &userB), .keyNotReplicated)
        hook.missing = .absent
        XCTAssertEqual(b.handler.code(.getAttributes(handle), &userB), .invalidHandle)
        // b's own handles and handles it holds tombstones for are settled without asking.
        let asked = hook.lookUps.count
        XCTAssertEqual(b.handler.code(.getAttributes(0x7772), &userB), .invalidHandle)
        XCTAssertEqual(hook.lookUps.count, asked)
        // The creator hands the record over when asked.
        hook.missing = .record(try XCTUnwrap(a.state.exportRecords(keys: [handle], users: []).keys.first))
        XCTAssertEqual(b.handler.code(.getAttributes(handle), &userB), .success)

        // A pull: compare inventories, fetch the difference.
        let second = try XCTUnwrap(
            a.handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "k", isSession: false, isExtractable: true),
                &userA
            ).handle)
        let wanted = SyncPlan.wanted(local: try b.state.inventory(), remote: try a.state.inventory())
        XCTAssertEqual(wanted.keys, [second])
        XCTAssertEqual(try b.state.applyReplicated(a.state.exportRecords(keys: wanted.keys, users: [])), 1)
        XCTAssertEqual(b.handler.ok(.findKeys(KeyFilter(label: "k")), &userB).handles, [handle, second])
        XCTAssertEqual(
            SyncPlan.wanted(local: try b.state.inventory(), remote: try a.state.inventory()).keys, [],
            "nothing left to fetch")
    }

    func testUsersFromPeersMakeRepeatedManagementCallsSucceed() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        a.state.replication = LoopbackReplication(minNodes: 2, peers: [b.state])
        var officerA = a.officerSession()
        var officerB = b.officerSession()
        // cloudhsm_mgmt_util sends createUser to a and b; a's copy reached b first.
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "erin", password: "pw"), &officerA)
        XCTAssertEqual(
            b.handler.code(.createUser(role: .cryptoUser, name: "erin", password: "pw"), &officerB), .success)
        XCTAssertEqual(
            b.handler.code(.createUser(role: .cryptoUser, name: "erin", password: "other"), &officerB), .userExists)
        var erin = b.handler.openSession()
        XCTAssertEqual(b.handler.code(.login(role: .cryptoUser, user: "erin", password: "pw"), &erin), .success)
        // The same for deleteUser.
        _ = a.handler.ok(.deleteUser(name: "erin"), &officerA)
        XCTAssertEqual(b.handler.code(.deleteUser(name: "erin"), &officerB), .success)
        XCTAssertEqual(b.handler.code(.deleteUser(name: "ghost"), &officerB), .userNotFound)
        // Made here, twice: the second is a conflict as before.
        _ = b.handler.ok(.createUser(role: .cryptoUser, name: "fay", password: "pw"), &officerB)
        XCTAssertEqual(
            b.handler.code(.createUser(role: .cryptoUser, name: "fay", password: "pw"), &officerB), .userExists)
    }

    // MARK: Messages

    func testPeerMessagesRoundTripAndRejectGarbage() throws {
        let key = PeerKeyRecord(
            handle: 0x51, keyClass: .secretKey, keyType: .aes, label: "x", owner: "cu", isExtractable: true,
            sizeInBits: 128, publicKeyInfo: [], material: [9, 9], version: 3, isDeleted: false)
        let user = PeerUserRecord(
            id: 4, name: "cu", role: .cryptoUser, salt: [1], passwordHash: [2], iterations: 10, version: 1,
            isDeleted: false)
        let requests: [PeerRequest] = [
            .listVersions, .fetchRecords(keys: [1, 2], users: ["a"]), .pushRecords(keys: [key], users: [user]),
        ]
        for request in requests {
            XCTAssertEqual(
                try PeerRequest.decode(operation: request.operation.rawValue, payload: request.encodedPayload()),
                request)
            let payload = request.encodedPayload()
            for cut in 0..<payload.count {
                XCTAssertThrowsError(
                    try PeerRequest.decode(operation: request.operation.rawValue, payload: Array(payload[..<cut])))
            }
        }
        let inventory = PeerInventory(
            handleCounter: 7, keys: [0x51: RecordStamp(version: 3, isDeleted: true)],
            users: ["cu": RecordStamp(version: 1, isDeleted: false, fingerprint: 42)])
        for (operation, response) in [
            (PeerOperation.listVersions, PeerResponse(body: .inventory(inventory))),
            (.fetchRecords, PeerResponse(body: .records(PeerRecords(keys: [key], users: [user])))),
            (.pushRecords, PeerResponse(body: .stored)),
            (.pushRecords, PeerResponse.failure(HSMError(.internalError, "disk full"))),
        ] {
            XCTAssertEqual(try PeerResponse.decode(operation: operation, payload: response.encodedPayload()), response)
        }
        // A count larger than the message cannot make the reader loop or allocate.
        XCTAssertThrowsError(try PeerRequest.decode(operation: 0x41, payload: [0xff, 0xff, 0xff, 0xff]))
        XCTAssertThrowsError(try PeerRequest.decode(operation: 0x4f, payload: []))
    }

    func testEnvelopeBindsKeyOperationAndCluster() throws {
        let key = [UInt8](repeating: 3, count: 32)
        let envelope = PeerEnvelope(key: key, clusterID: "c1", context: sharedContext)
        let sealed = try envelope.seal([1, 2, 3], operation: 0x42)
        XCTAssertEqual(try envelope.open(sealed, operation: 0x42), [1, 2, 3])
        XCTAssertThrowsError(try envelope.open(sealed, operation: 0x41))
        XCTAssertThrowsError(
            try PeerEnvelope(key: key, clusterID: "c2", context: sharedContext).open(sealed, operation: 0x42))
        XCTAssertThrowsError(
            try PeerEnvelope(key: [UInt8](repeating: 4, count: 32), clusterID: "c1", context: sharedContext).open(
                sealed, operation: 0x42))
    }

    func testNodeIDFromCertificateSubject() {
        XCTAssertEqual(nodeID(fromSubject: "/O=CloudHSM offload (local dev)/CN=hsm-node-2"), 2)
        XCTAssertEqual(nodeID(fromSubject: "/CN=hsm-node-15"), 15)
        XCTAssertNil(nodeID(fromSubject: "/CN=hsm-node-16"))
        XCTAssertNil(nodeID(fromSubject: "/CN=hsm-node-02"))
        XCTAssertNil(nodeID(fromSubject: "/CN=127.0.0.1"))
        XCTAssertNil(nodeID(fromSubject: nil))
    }

    func testClusterKeyFile() throws {
        let directory = NSTemporaryDirectory() + "cluster-key-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let raw = directory + "/raw"
        FileManager.default.createFile(
            atPath: raw, contents: Data(repeating: 5, count: 32), attributes: [.posixPermissions: 0o600])
        XCTAssertEqual(try ClusterKey.load(path: raw), [UInt8](repeating: 5, count: 32))
        let hex = directory + "/hex"
        FileManager.default.createFile(
            atPath: hex, contents: Data((String(repeating: "0a", count: 32) + "\n").utf8),
            attributes: [.posixPermissions: 0o600])
        XCTAssertEqual(try ClusterKey.load(path: hex), [UInt8](repeating: 10, count: 32))
        chmod(hex, 0o644)
        XCTAssertThrowsError(try ClusterKey.load(path: hex)) { XCTAssertTrue("\($0)".contains("chmod 600")) }
        let short = directory + "/short"
        FileManager.default.createFile(
            atPath: short, contents: Data(repeating: 5, count: 16), attributes: [.posixPermissions: 0o600])
        XCTAssertThrowsError(try ClusterKey.load(path: short))
    }

    func testRunFlagsForPeers() throws {
        let base = ["run", "--data-dir", "/d", "--listen", "127.0.0.1:1", "--cert", "c", "--key", "k", "--ca", "a"]
        guard case .run(let alone) = try HSMDCommand.parse(base) else { return XCTFail("not run") }
        XCTAssertEqual(alone.peers, [])
        XCTAssertEqual(alone.minNodes, 1, "a node without peers needs only itself")
        let flags =
            base + [
                "--peer", "1=127.0.0.1:2224", "--peer", "2=[::1]:2225", "--cluster-key", "/ck", "--sync-interval-ms",
                "500",
            ]
        guard case .run(let options) = try HSMDCommand.parse(flags) else { return XCTFail("not run") }
        XCTAssertEqual(
            options.peers,
            [PeerAddress(id: 1, host: "127.0.0.1", port: 2224), PeerAddress(id: 2, host: "::1", port: 2225)])
        XCTAssertEqual(options.clusterKeyPath, "/ck")
        XCTAssertEqual(options.minNodes, 2)
        XCTAssertEqual(options.syncIntervalMilliseconds, 500)
        func message(_ arguments: [String]) -> String {
            do {
                _ = try HSMDCommand.parse(arguments)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(message(base + ["--peer", "1=h:1"]).contains("--cluster-key"))
        XCTAssertTrue(message(base + ["--peer", "x=h:1", "--cluster-key", "k"]).contains("N=HOST:PORT"))
        XCTAssertTrue(
            message(base + ["--peer", "1=h:1", "--peer", "1=h:2", "--cluster-key", "k"]).contains("same node id"))
        XCTAssertTrue(
            message(base + ["--peer", "1=h:1", "--cluster-key", "k", "--min-nodes", "3"]).contains("--min-nodes"))
        XCTAssertEqual(message(base + ["--min-nodes", "1"]), "accepted")
    }
}
