// The node's side of replication: what it tells peers it holds, the records it hands
// out (material re-opened from the master key), the records it takes in (material sealed
// under its own master key), and what it answers for a key it does not hold.

import CloudHSMCore
import Foundation
import OpenSSLKit

/// What NodeState needs from replication; the Replicator implements it over the network,
/// tests implement it in memory.
protocol ReplicationHook: AnyObject, Sendable {
    /// Nodes (this one included) that must hold a new token key before it is reported made.
    var minNodes: Int { get }

    /// Sends records to every peer at once.
    ///
    /// - Parameter needed: return as soon as this many peers stored them (the other pushes
    ///   go on in the background); nil waits until every push has ended. Either way the
    ///   wait is bounded (twice the peer connect timeout).
    /// - Returns: how many peers had stored them when it returned.
    func push(_ records: PeerRecords, waitFor needed: Int?) -> Int

    /// Asks the node that made `handle` for it, because this node does not hold it.
    func lookUpMissing(_ handle: KeyHandle) -> MissingKey

    /// Asks every peer at once what it holds of `user` (sessions, owned keys); waits no
    /// longer than a push does.
    ///
    /// - Returns: the answers of the peers that gave one, by node id.
    func activity(of user: UserID) -> [UInt8: UserActivity]
}

/// What the peers say about a key this node does not hold.
enum MissingKey: Equatable {
    /// The creator's current record (possibly a tombstone).
    case record(PeerKeyRecord)
    /// No such token key.
    case absent
    /// It may exist, but this node cannot find out now: the client should ask another node.
    case notReplicated
}

extension NodeState {
    /// Every record's stamp, the failed-login logs and the handle counter: what
    /// `listVersions` answers.
    func inventory() throws -> PeerInventory {
        var users: [UserID: RecordStamp] = [:]
        for user in try store.userRecords() { users[user.id] = user.stamp }
        return PeerInventory(
            handleCounter: try store.handleCounter(), keys: try store.keyStamps(), users: users,
            loginFailures: try store.loginFailureLogs())
    }

    /// The stored records named, with key material opened for the journey; names this
    /// node does not hold are left out.
    func exportRecords(keys handles: [KeyHandle], users ids: [UserID]) throws -> PeerRecords {
        var out = PeerRecords()
        for handle in handles {
            guard let record = try store.keyRecord(handle: handle) else { continue }
            var material: [UInt8] = []
            if !record.isDeleted, record.keyClass != .publicKey {
                material = try AESGCM.open(
                    record.sealedMaterial, key: masterKey, additionalData: additionalData(record.handle),
                    context: context)
            }
            out.keys.append(Self.peerRecord(record, material: material))
        }
        for id in ids {
            guard let user = try store.userRecord(id: id) else { continue }
            out.users.append(Self.peerRecord(user))
        }
        return out
    }

    /// Stores peers' records that are newer than this node's, makes keys usable at once,
    /// ends the sessions of users deleted, and merges failed-login logs.
    ///
    /// - Returns: how many records (and logs) were newer (and written).
    @discardableResult
    func applyReplicated(_ records: PeerRecords) throws -> Int {
        var written = 0
        if !records.keys.isEmpty {
            // Seal and parse before taking the lock: RSA parsing is the slow part.
            var stored: [KeyRecord] = []
            var objects: [KeyObject?] = []
            for incoming in records.keys {
                let hasMaterial = !incoming.isDeleted && incoming.keyClass != .publicKey
                guard !hasMaterial || !incoming.material.isEmpty else {
                    throw StoreError("peer record \(incoming.handle) has no key material")
                }
                let sealed =
                    hasMaterial
                    ? try AESGCM.seal(
                        plaintext: incoming.material, key: masterKey, additionalData: additionalData(incoming.handle),
                        context: context)
                    : []
                let record = KeyRecord(
                    handle: incoming.handle, keyClass: incoming.keyClass, keyType: incoming.keyType,
                    label: incoming.label, owner: incoming.owner, isExtractable: incoming.isExtractable,
                    sizeInBits: incoming.sizeInBits, publicKeyInfo: incoming.publicKeyInfo, sealedMaterial: sealed,
                    version: incoming.version, isDeleted: incoming.isDeleted)
                stored.append(record)
                objects.append(incoming.isDeleted ? nil : try makeObject(record))
            }
            try applyLock.withLock {
                let results = try store.applyReporting(keyRecords: stored)
                lock.withLock {
                    for (index, wasWritten) in results.enumerated() where wasWritten {
                        written += 1
                        if let object = objects[index] {
                            tokenKeys[object.handle] = object
                        } else {
                            tokenKeys.removeValue(forKey: stored[index].handle)
                        }
                    }
                }
            }
        }
        for incoming in records.users {
            guard incoming.iterations >= 1 else { throw StoreError("peer user \(incoming.name) has no iterations") }
            let record = UserRecord(
                id: incoming.id, name: incoming.name, role: incoming.role, salt: incoming.salt,
                passwordHash: incoming.passwordHash, iterations: Int(incoming.iterations), version: incoming.version,
                isDeleted: incoming.isDeleted)
            try applyLock.withLock {
                let application = try store.applyResolving(userRecord: record)
                if application.isWritten {
                    written += 1
                    noteUserChanges([record] + application.superseded, fromPeer: true)
                }
            }
        }
        written += try store.merge(loginFailures: records.loginFailures)
        return written
    }

    /// The token key `handle` when this node lacks it: fetched from its creator when the
    /// creator is a peer that has it.
    ///
    /// - Throws: `.invalidHandle` when no such key exists, `.keyNotReplicated` when it may
    ///   exist but this node cannot tell yet.
    func missingKey(_ handle: KeyHandle, sessionID: UInt64) throws -> KeyObject {
        let unknown = HSMError(.invalidHandle, "no key with handle \(handle)")
        let creator = UInt8(handle & 0xF)
        // Our own handles, and handles we hold a record (a tombstone) for, are settled.
        guard let replication, creator != nodeID, try store.keyRecord(handle: handle) == nil else { throw unknown }
        switch replication.lookUpMissing(handle) {
        case .absent:
            throw unknown
        case .notReplicated:
            throw HSMError(
                .keyNotReplicated, "key \(handle) was made by node \(creator) and has not reached this node yet")
        case .record(let record):
            try applyReplicated(PeerRecords(keys: [record]))
            guard let object = object(handle, sessionID: sessionID) else { throw unknown }
            return object
        }
    }
}
