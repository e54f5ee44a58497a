// The durable store: keys survive a restart, material is encrypted at rest and bound to
// its handle, handles never repeat, and damaged data is refused at start.

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

    func testNewerVersionWins() throws {
        let node = try TestNode()
        let record = KeyRecord(
            handle: 0x1230 | 2, keyClass: .publicKey, keyType: .rsa, label: "v2", owner: "alice", isExtractable: true,
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

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count, !needle.isEmpty else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<start + needle.count].elementsEqual(needle) { return true }
        }
        return false
    }
}
