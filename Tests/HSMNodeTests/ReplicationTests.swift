// Replication without a network: the merge order of record versions, the sync plan, the
// store's apply rules, creation with min_nodes, 0xbc for keys not yet here, users taken
// from peers and identified by id, deletions that end sessions on other nodes, the
// cluster-wide lockout, the peer messages' encoding and sealing, and the new hsmd flags.

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
    /// Whether the peers answer userActivity (false: as if they could not be reached).
    var answersActivity = true
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

    func activity(of user: UserID) -> [UInt8: UserActivity] {
        guard isReachable, answersActivity else { return [:] }
        return Dictionary(uniqueKeysWithValues: peers.map { ($0.nodeID, $0.activity(of: user)) })
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
            users: [0x21: RecordStamp(version: 2, isDeleted: false, fingerprint: 1)])
        let remote = PeerInventory(
            handleCounter: 9,
            keys: [
                0x11: RecordStamp(version: 1, isDeleted: false),
                0x21: RecordStamp(version: 2, isDeleted: true),
                0x31: RecordStamp(version: 1, isDeleted: false),
                0x41: RecordStamp(version: 1, isDeleted: false),  // new
            ],
            users: [
                0x21: RecordStamp(version: 2, isDeleted: false, fingerprint: 7),  // same version, wins the tie
                0x32: RecordStamp(version: 1, isDeleted: false),
            ])
        let wanted = SyncPlan.wanted(local: local, remote: remote)
        XCTAssertEqual(wanted.keys, [0x21, 0x41])
        XCTAssertEqual(wanted.users, [0x21, 0x32])
        // Two nodes that hold the same things want nothing from each other.
        XCTAssertTrue(SyncPlan.wanted(local: remote, remote: remote).keys.isEmpty)
        XCTAssertTrue(SyncPlan.wanted(local: remote, remote: local).users.isEmpty)
    }

    // MARK: Store rules

    func testStoreKeepsTheWinningVersion() throws {
        let node = try TestNode(nodeID: 1)
        let store = node.state.store
        var record = KeyRecord(
            handle: 0x21, keyClass: .publicKey, keyType: .rsa, label: "l", owner: 0x11, isExtractable: true,
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

    func testUsersAreIdentifiedByIDAndOneIDKeepsAName() throws {
        let node = try TestNode(nodeID: 1)
        let store = node.state.store
        func user(_ name: String, id: UserID, version: UInt64, salt: UInt8) -> UserRecord {
            UserRecord(
                id: id, name: name, role: .cryptoUser, salt: [salt], passwordHash: [1, 2], iterations: 10,
                version: version, isDeleted: false)
        }
        // Two nodes created carol at once: the lower id stays, the other is deleted here.
        XCTAssertTrue(try store.apply(userRecord: user("carol", id: 0x22, version: 1, salt: 1)))
        let application = try store.applyResolving(userRecord: user("carol", id: 0x13, version: 1, salt: 2))
        XCTAssertTrue(application.isWritten)
        XCTAssertEqual(application.superseded.map(\.id), [0x22])
        XCTAssertEqual(try store.liveUser(named: "carol")?.id, 0x13)
        XCTAssertEqual(try store.userRecord(id: 0x22)?.isDeleted, true)
        // In the other order, the same outcome: every node keeps the same id.
        let other = try TestNode(nodeID: 2)
        try other.state.store.apply(userRecord: user("carol", id: 0x13, version: 1, salt: 2))
        let late = try other.state.store.applyResolving(userRecord: user("carol", id: 0x22, version: 1, salt: 1))
        XCTAssertEqual(late.superseded.map(\.id), [0x22])
        XCTAssertEqual(try other.state.store.liveUser(named: "carol")?.id, 0x13)
        XCTAssertEqual(try other.state.store.userRecord(id: 0x22), try store.userRecord(id: 0x22))
        // Equal versions of one id with different salts: every node keeps the same one.
        let a = user("dave", id: 0x31, version: 1, salt: 1)
        let b = user("dave", id: 0x31, version: 1, salt: 2)
        let winner = a.stamp < b.stamp ? b : a
        let loser = a.stamp < b.stamp ? a : b
        XCTAssertTrue(try store.apply(userRecord: loser))
        XCTAssertTrue(try store.apply(userRecord: winner))
        XCTAssertFalse(try store.apply(userRecord: loser))
        XCTAssertEqual(try store.liveUser(named: "dave")?.salt, winner.salt)
        // A tombstone of a name leaves room for a new user of that name under a new id.
        XCTAssertTrue(try store.apply(userRecord: winner.tombstone))
        XCTAssertNil(try store.liveUser(named: "dave"))
        XCTAssertTrue(try store.apply(userRecord: user("dave", id: 0x41, version: 1, salt: 3)))
        XCTAssertEqual(try store.userRecords(named: "dave").map(\.id), [0x31, 0x41])
    }

    func testNodesGiveOutDifferentUserIDsAndNeverReuseOne() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        var officerA = a.officerSession()
        var officerB = b.officerSession()
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "ann", password: "pw"), &officerA)
        _ = b.handler.ok(.createUser(role: .cryptoUser, name: "ann", password: "pw"), &officerB)
        let idA = try XCTUnwrap(a.handler.userID("ann", &officerA))
        let idB = try XCTUnwrap(b.handler.userID("ann", &officerB))
        XCTAssertEqual(idA & 0xF, 1)
        XCTAssertEqual(idB & 0xF, 2)
        XCTAssertNotEqual(idA, idB)
        // Deleted and made again: a new id, also after a restart.
        _ = a.handler.ok(.deleteUser(name: "ann"), &officerA)
        try a.reopen()
        officerA = a.officerSession()
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "ann", password: "pw"), &officerA)
        let again = try XCTUnwrap(a.handler.userID("ann", &officerA))
        XCTAssertNotEqual(again, idA)
        XCTAssertEqual(again & 0xF, 1)
        XCTAssertEqual(a.handler.userID("admin", &officerA), NodeStore.initialOfficerID)
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
        try b.state.applyReplicated(a.state.exportRecords(keys: [], users: [try XCTUnwrap(userA.userID)]))
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
        XCTAssertEqual(erin.userID, a.handler.userID("erin", &officerA), "one user, one id")
        XCTAssertEqual(b.handler.code(.logout, &erin), .success)
        // The same for deleteUser.
        _ = a.handler.ok(.deleteUser(name: "erin"), &officerA)
        XCTAssertEqual(b.handler.code(.deleteUser(name: "erin"), &officerB), .success)
        XCTAssertEqual(b.handler.code(.deleteUser(name: "ghost"), &officerB), .userNotFound)
        // Made here, twice: the second is a conflict as before.
        _ = b.handler.ok(.createUser(role: .cryptoUser, name: "fay", password: "pw"), &officerB)
        XCTAssertEqual(
            b.handler.code(.createUser(role: .cryptoUser, name: "fay", password: "pw"), &officerB), .userExists)
    }

    func testConcurrentCreationOnTwoNodesConvergesToOneID() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        var officerA = a.officerSession()
        var officerB = b.officerSession()
        // cloudhsm_mgmt_util's createUser reached both before either push arrived.
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "gil", password: "pw"), &officerA)
        _ = b.handler.ok(.createUser(role: .cryptoUser, name: "gil", password: "pw"), &officerB)
        let ids = [a.handler.userID("gil", &officerA), b.handler.userID("gil", &officerB)].compactMap { $0 }
        XCTAssertEqual(Set(ids).count, 2)
        var gilOnB = b.handler.openSession()
        XCTAssertEqual(b.handler.code(.login(role: .cryptoUser, user: "gil", password: "pw"), &gilOnB), .success)
        // The pushes cross.
        try b.state.applyReplicated(a.state.exportRecords(keys: [], users: [ids[0]]))
        try a.state.applyReplicated(b.state.exportRecords(keys: [], users: [ids[1]]))
        let winner = try XCTUnwrap(ids.min())
        XCTAssertEqual(a.handler.userID("gil", &officerA), winner)
        XCTAssertEqual(b.handler.userID("gil", &officerB), winner)
        for id in ids {
            XCTAssertEqual(try a.state.store.userRecord(id: id), try b.state.store.userRecord(id: id))
        }
        // A session of the losing id ends; the name logs in as the winner.
        XCTAssertEqual(b.handler.code(.findKeys(KeyFilter()), &gilOnB), .notLoggedIn)
        var again = b.handler.openSession()
        XCTAssertEqual(b.handler.code(.login(role: .cryptoUser, user: "gil", password: "pw"), &again), .success)
        XCTAssertEqual(again.userID, winner)
    }

    func testAKeyOfADeletedUserArrivingLateIsNotTheNewUsersKey() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        b.state.replication = LoopbackReplication(minNodes: 1, peers: [])
        var bob = a.userSession("bob")
        let oldID = try XCTUnwrap(bob.userID)
        let key = try XCTUnwrap(
            a.handler.ok(
                .generateSymmetricKey(
                    keyType: .aes, byteCount: 16, label: "old", isSession: false, isExtractable: false),
                &bob
            ).handle)
        // b learns of bob and of his deletion, but not (yet) of his key; a bob is made again.
        let exported = try a.state.exportRecords(keys: [key], users: [oldID])
        try b.state.applyReplicated(
            PeerRecords(
                users: exported.users.map { record in
                    var tombstone = record
                    tombstone.version += 1
                    tombstone.isDeleted = true
                    return tombstone
                }))
        var newBob = b.userSession("bob")
        XCTAssertNotEqual(newBob.userID, oldID)
        // The old bob's key arrives late: it is stored, and still not the new bob's.
        try b.state.applyReplicated(PeerRecords(keys: exported.keys))
        XCTAssertNotNil(b.state.object(key, sessionID: newBob.id))
        XCTAssertEqual(b.handler.ok(.findKeys(KeyFilter()), &newBob).handles, [])
        XCTAssertEqual(b.handler.code(.getAttributes(key), &newBob), .keyAccessDenied)
        XCTAssertEqual(b.handler.code(.deleteKey(key), &newBob), .keyAccessDenied)
    }

    func testDeletionArrivingFromAPeerEndsSessions() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        var officerA = a.officerSession()
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "hal", password: "pw"), &officerA)
        let id = try XCTUnwrap(a.handler.userID("hal", &officerA))
        try b.state.applyReplicated(a.state.exportRecords(keys: [], users: [id]))
        var hal = b.handler.openSession()
        XCTAssertEqual(b.handler.code(.login(role: .cryptoUser, user: "hal", password: "pw"), &hal), .success)
        let sessionKey = try XCTUnwrap(
            b.handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "s", isSession: true, isExtractable: false),
                &hal
            ).handle)
        // Logged in on b, and b answers: a refuses to delete hal.
        let hook = LoopbackReplication(minNodes: 1, peers: [b.state])
        a.state.replication = hook
        let refused = a.handler.handle(.deleteUser(name: "hal"), session: &officerA)
        XCTAssertEqual(refused.code, .userLoggedIn)
        XCTAssertTrue(refused.detail.contains("logged in (1 session on node 2)"), refused.detail)
        // b cannot be asked (it cannot refuse), and the tombstone still reaches it.
        hook.answersActivity = false
        XCTAssertEqual(a.handler.code(.deleteUser(name: "hal"), &officerA), .success)
        XCTAssertEqual(b.handler.code(.findKeys(KeyFilter()), &hal), .notLoggedIn)
        XCTAssertNil(b.state.object(sessionKey, sessionID: hal.id), "its session keys are gone")
        XCTAssertEqual(
            b.handler.code(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "t", isSession: false, isExtractable: false),
                &hal), .notLoggedIn)
        XCTAssertEqual(b.state.activity(of: id), UserActivity(sessions: 0, ownedKeys: 0))
    }

    func testDeletingAUserThatOwnsKeysOnAPeerIsRefused() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        var officerA = a.officerSession()
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "ivy", password: "pw"), &officerA)
        let id = try XCTUnwrap(a.handler.userID("ivy", &officerA))
        try b.state.applyReplicated(a.state.exportRecords(keys: [], users: [id]))
        // Keys made on b that have not reached a.
        var ivy = b.handler.openSession()
        XCTAssertEqual(b.handler.code(.login(role: .cryptoUser, user: "ivy", password: "pw"), &ivy), .success)
        for label in ["k1", "k2"] {
            _ = b.handler.ok(
                .generateSymmetricKey(
                    keyType: .aes, byteCount: 16, label: label, isSession: false, isExtractable: false),
                &ivy)
        }
        b.handler.closeSession(&ivy)
        a.state.replication = LoopbackReplication(minNodes: 1, peers: [b.state])
        let refused = a.handler.handle(.deleteUser(name: "ivy"), session: &officerA)
        XCTAssertEqual(refused.code, .userOwnsKeys)
        XCTAssertTrue(refused.detail.hasPrefix("user ivy owns 2 keys; delete them first"), refused.detail)
        XCTAssertEqual(a.handler.userID("ivy", &officerA), id, "nothing was deleted")
    }

    // MARK: Cluster-wide lockout

    func testFailedLoginsCountOnEveryNodeAndAnOfficerUnlocksEverywhere() throws {
        let nodes = try (1...3).map { try TestNode(nodeID: UInt8($0)) }
        for node in nodes {
            node.state.replication = LoopbackReplication(minNodes: 1, peers: nodes.filter { $0 !== node }.map(\.state))
        }
        var officer = nodes[0].officerSession()
        _ = nodes[0].handler.ok(.createUser(role: .cryptoUser, name: "jo", password: "right"), &officer)
        func login(_ node: Int, _ password: String) -> HSMReturnCode {
            var session = nodes[node].handler.openSession()
            return nodes[node].handler.code(.login(role: .cryptoUser, user: "jo", password: password), &session)
        }
        // The same wrong password on every node (as the tools send it) counts once.
        for node in 0..<3 { XCTAssertEqual(login(node, "typo"), .loginFailed) }
        XCTAssertEqual(
            try nodes[2].state.store.failedLoginCount(userID: try XCTUnwrap(nodes[2].handler.userID("jo", &officer))), 1
        )
        // Four more, spread over the nodes: five in all locks jo on every node.
        for (node, password) in [(0, "a"), (1, "b"), (2, "c"), (1, "d")] {
            XCTAssertEqual(login(node, password), .loginFailed)
        }
        for node in 0..<3 {
            XCTAssertEqual(login(node, "right"), .userLocked, "node \(node)")
            var officerHere = nodes[node].officerSession()
            guard case .users(let users) = nodes[node].handler.ok(.listUsers, &officerHere) else { return XCTFail() }
            let jo = try XCTUnwrap(users.first { $0.name == "jo" })
            XCTAssertEqual(jo.failedLogins, 5)
            XCTAssertTrue(jo.isLocked)
        }
        // One officer's new password unlocks jo on every node.
        var officerOn1 = nodes[1].officerSession()
        XCTAssertEqual(nodes[1].handler.code(.changePassword(name: "jo", newPassword: "new"), &officerOn1), .success)
        for node in 0..<3 { XCTAssertEqual(login(node, "new"), .success, "node \(node)") }
    }

    func testANodeThatMissedTheFailuresLearnsThemAtSync() throws {
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        var officer = a.officerSession()
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "kim", password: "right"), &officer)
        let id = try XCTUnwrap(a.handler.userID("kim", &officer))
        try b.state.applyReplicated(a.state.exportRecords(keys: [], users: [id]))
        // b was away while kim failed five times on a.
        for attempt in 0..<5 {
            var session = a.handler.openSession()
            XCTAssertEqual(
                a.handler.code(.login(role: .cryptoUser, user: "kim", password: "w\(attempt)"), &session), .loginFailed)
        }
        var onB = b.handler.openSession()
        XCTAssertEqual(b.handler.code(.login(role: .cryptoUser, user: "kim", password: "right"), &onB), .success)
        b.handler.closeSession(&onB)
        // The sync merges the logs from the inventory (b's success forgave nothing it had
        // not seen, so a's failures still count there).
        XCTAssertEqual(try b.state.store.merge(loginFailures: try a.state.inventory().loginFailures), 1)
        XCTAssertEqual(b.handler.code(.login(role: .cryptoUser, user: "kim", password: "right"), &onB), .userLocked)
        XCTAssertEqual(try b.state.store.merge(loginFailures: try a.state.inventory().loginFailures), 0, "merged once")
    }

    func testFailuresAgainstALosingIDCountAgainstTheIDKept() throws {
        // b missed a's createUser push and made its own lem; guesses on b count against it.
        let a = try TestNode(nodeID: 1)
        let b = try TestNode(nodeID: 2)
        var officerA = a.officerSession()
        var officerB = b.officerSession()
        _ = a.handler.ok(.createUser(role: .cryptoUser, name: "lem", password: "right"), &officerA)
        _ = b.handler.ok(.createUser(role: .cryptoUser, name: "lem", password: "right"), &officerB)
        let kept = try XCTUnwrap(a.handler.userID("lem", &officerA))
        for attempt in 0..<3 {
            var session = b.handler.openSession()
            XCTAssertEqual(
                b.handler.code(.login(role: .cryptoUser, user: "lem", password: "w\(attempt)"), &session), .loginFailed)
        }
        // a's lem (the lower id) arrives: b keeps it, and the three failures with it.
        try b.state.applyReplicated(a.state.exportRecords(keys: [], users: [kept]))
        XCTAssertEqual(b.handler.userID("lem", &officerB), kept)
        XCTAssertEqual(try b.state.store.failedLoginCount(userID: kept), 3)
        // They reach a with b's next inventory; two more guesses on a lock lem there.
        try a.state.store.merge(loginFailures: try b.state.inventory().loginFailures)
        for attempt in 3..<5 {
            var session = a.handler.openSession()
            XCTAssertEqual(
                a.handler.code(.login(role: .cryptoUser, user: "lem", password: "w\(attempt)"), &session), .loginFailed)
        }
        var session = a.handler.openSession()
        XCTAssertEqual(a.handler.code(.login(role: .cryptoUser, user: "lem", password: "right"), &session), .userLocked)
    }

    func testLoginFailureLogsMergeByMaximumAndForgiveness() throws {
        let store = try TestNode(nodeID: 1).state.store
        let user: UserID = 0x51
        XCTAssertTrue(try store.recordFailedLogin(userID: user, tag: 10))
        XCTAssertFalse(try store.recordFailedLogin(userID: user, tag: 10), "the same wrong password again")
        XCTAssertTrue(try store.recordFailedLogin(userID: user, tag: 11))
        // Node 2 counted three, one of them forgiven there, one the same password as here.
        let remote = LoginFailureLog(
            userID: user, marks: [LoginMark(node: 2, counted: 3, forgiven: 1)],
            failures: [LoginFailure(node: 2, sequence: 2, tag: 10), LoginFailure(node: 2, sequence: 3, tag: 12)])
        XCTAssertEqual(try store.merge(loginFailures: [remote]), 1)
        XCTAssertEqual(try store.failedLoginCount(userID: user), 3, "tags 10, 11 and 12")
        XCTAssertEqual(try store.merge(loginFailures: [remote]), 0)
        // A success here forgives everything seen here; node 2's fourth failure, seen later, counts.
        XCTAssertTrue(try store.forgiveFailedLogins(userID: user))
        XCTAssertEqual(try store.failedLoginCount(userID: user), 0)
        let later = LoginFailureLog(
            userID: user, marks: [LoginMark(node: 2, counted: 4, forgiven: 1)],
            failures: [
                LoginFailure(node: 2, sequence: 3, tag: 12), LoginFailure(node: 2, sequence: 4, tag: 13),
            ])
        XCTAssertEqual(try store.merge(loginFailures: [later]), 1)
        XCTAssertEqual(try store.failedLoginCount(userID: user), 1, "only the failure after the forgiveness")
        let log = try store.loginFailureLog(userID: user)
        XCTAssertEqual(
            Set(log.marks), [LoginMark(node: 1, counted: 2, forgiven: 2), LoginMark(node: 2, counted: 4, forgiven: 3)])
        XCTAssertEqual(log.failures, [LoginFailure(node: 2, sequence: 4, tag: 13)])
        XCTAssertEqual(log.count, 1)
    }

    // MARK: Messages

    func testPeerMessagesRoundTripAndRejectGarbage() throws {
        let key = PeerKeyRecord(
            handle: 0x51, keyClass: .secretKey, keyType: .aes, label: "x", owner: 0x42, isExtractable: true,
            sizeInBits: 128, publicKeyInfo: [], material: [9, 9], version: 3, isDeleted: false)
        let user = PeerUserRecord(
            id: 0x42, name: "cu", role: .cryptoUser, salt: [1], passwordHash: [2], iterations: 10, version: 1,
            isDeleted: false)
        let log = LoginFailureLog(
            userID: 0x42, marks: [LoginMark(node: 2, counted: 3, forgiven: 1)],
            failures: [LoginFailure(node: 2, sequence: 2, tag: 7), LoginFailure(node: 2, sequence: 3, tag: 8)])
        let requests: [PeerRequest] = [
            .listVersions, .fetchRecords(keys: [1, 2], users: [0x42]),
            .pushRecords(PeerRecords(keys: [key], users: [user], loginFailures: [log])), .userActivity(0x42),
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
            users: [0x42: RecordStamp(version: 1, isDeleted: false, fingerprint: 42)], loginFailures: [log])
        for (operation, response) in [
            (PeerOperation.listVersions, PeerResponse(body: .inventory(inventory))),
            (.fetchRecords, PeerResponse(body: .records(PeerRecords(keys: [key], users: [user])))),
            (.userActivity, PeerResponse(body: .activity(UserActivity(sessions: 2, ownedKeys: 5)))),
            (.pushRecords, PeerResponse(body: .stored)),
            (.pushRecords, PeerResponse.failure(HSMError(.internalError, "disk full"))),
        ] {
            XCTAssertEqual(try PeerResponse.decode(operation: operation, payload: response.encodedPayload()), response)
        }
        // A count larger than the message cannot make the reader loop or allocate.
        XCTAssertThrowsError(try PeerRequest.decode(operation: 0x41, payload: [0xff, 0xff, 0xff, 0xff]))
        XCTAssertThrowsError(try PeerRequest.decode(operation: 0x4f, payload: []))
        // A node id beyond 0...15 in a log is refused, not stored.
        var bad = log
        bad.marks[0].node = 16
        XCTAssertThrowsError(
            try PeerRequest.decode(
                operation: 0x42, payload: PeerRequest.pushRecords(PeerRecords(loginFailures: [bad])).encodedPayload()))
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
