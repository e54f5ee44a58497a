// The node's rules without sockets: login and lockout, roles, key ownership, every key
// operation's checks, session keys, and malformed frames.

import CloudHSMCore
import Foundation
import OpenSSLKit
import Synchronization
import XCTest

@testable import HSMNode

final class RequestHandlerTests: XCTestCase {
    var node: TestNode!

    override func setUpWithError() throws {
        node = try TestNode()
    }

    var handler: RequestHandler { node.handler }

    // MARK: Sessions and users

    func testOnlyLoginAndNodeInfoWithoutLogin() {
        var session = handler.openSession()
        guard case .nodeInfo(let info) = handler.ok(.nodeInfo, &session) else { return XCTFail("no node info") }
        XCTAssertEqual(info.nodeId, 5)
        XCTAssertEqual(info.clusterId, "test-cluster")
        XCTAssertEqual(info.version, "0.1.0")
        // Counters and key/user counts need a login.
        XCTAssertFalse(info.includesCounters)
        XCTAssertEqual(info.userCount, 0)
        for request: HSMRequest in [
            .logout, .listUsers, .generateRandom(count: 4), .findKeys(KeyFilter()), .getAttributes(1),
            .createUser(role: .cryptoUser, name: "x", password: "y"),
        ] {
            XCTAssertEqual(handler.code(request, &session), .notLoggedIn, "\(request.operation)")
        }
        var officer = node.officerSession()
        XCTAssertEqual(
            handler.code(.login(role: .cryptoOfficer, user: "admin", password: "officer-pw"), &officer),
            .alreadyLoggedIn)
        guard case .nodeInfo(let full) = handler.ok(.nodeInfo, &officer) else { return XCTFail("no node info") }
        XCTAssertTrue(full.includesCounters)
        XCTAssertEqual(full.userCount, 1)
        XCTAssertEqual(handler.code(.logout, &officer), .success)
        XCTAssertEqual(handler.code(.listUsers, &officer), .notLoggedIn)
    }

    func testLoginFailuresDoNotTellWhichPartWasWrong() {
        var session = handler.openSession()
        let unknown = handler.handle(.login(role: .cryptoUser, user: "nobody", password: "x"), session: &session)
        let wrong = handler.handle(.login(role: .cryptoOfficer, user: "admin", password: "x"), session: &session)
        XCTAssertEqual(unknown, wrong)
        XCTAssertEqual(unknown.code, .loginFailed)
        // The right password for the wrong role does not log in either.
        XCTAssertEqual(
            handler.code(.login(role: .cryptoUser, user: "admin", password: "officer-pw"), &session), .loginFailed)
    }

    func testLockoutAfterFiveFailuresAndUnlockByOfficer() throws {
        _ = node.userSession("bob", password: "right")
        var session = handler.openSession()
        for attempt in 0..<5 {
            XCTAssertEqual(
                handler.code(.login(role: .cryptoUser, user: "bob", password: "wrong-\(attempt)"), &session),
                .loginFailed)
        }
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "bob", password: "right"), &session), .userLocked)
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "bob", password: "wrong"), &session), .userLocked)
        var officer = node.officerSession()
        guard case .users(let users) = handler.ok(.listUsers, &officer) else { return XCTFail("no users") }
        XCTAssertEqual(users.first { $0.name == "bob" }?.isLocked, true)
        // The lockout is on disk, not only in memory.
        try node.reopen()
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "bob", password: "right"), &session), .userLocked)
        officer = node.officerSession()
        XCTAssertEqual(handler.code(.changePassword(name: "bob", newPassword: "new"), &officer), .success)
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "bob", password: "right"), &session), .loginFailed)
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "bob", password: "new"), &session), .success)
    }

    func testParallelGuessesCannotSlipUnderTheLimit() {
        _ = node.userSession("dave", password: "right")
        let codes = Mutex<[HSMReturnCode]>([])
        DispatchQueue.concurrentPerform(iterations: 12) { attempt in
            var session = handler.openSession()
            let code = handler.code(.login(role: .cryptoUser, user: "dave", password: "wrong-\(attempt)"), &session)
            codes.withLock { $0.append(code) }
        }
        let answers = codes.withLock { $0 }
        XCTAssertEqual(answers.filter { $0 == .loginFailed }.count, 5, "\(answers)")
        XCTAssertEqual(answers.filter { $0 == .userLocked }.count, 7, "\(answers)")
        var session = handler.openSession()
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "dave", password: "right"), &session), .userLocked)
    }

    func testParallelCorrectLoginsAllSucceed() {
        _ = node.userSession("erin", password: "right")
        let codes = Mutex<[HSMReturnCode]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            var session = handler.openSession()
            let code = handler.code(.login(role: .cryptoUser, user: "erin", password: "right"), &session)
            codes.withLock { $0.append(code) }
        }
        XCTAssertEqual(codes.withLock { $0 }, Array(repeating: .success, count: 16))
    }

    func testSuccessResetsFailureCount() {
        _ = node.userSession("carol", password: "pw")
        for attempt in 0..<4 {
            var session = handler.openSession()
            XCTAssertEqual(
                handler.code(.login(role: .cryptoUser, user: "carol", password: "no-\(attempt)"), &session),
                .loginFailed)
        }
        var session = handler.openSession()
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "carol", password: "pw"), &session), .success)
        for attempt in 4..<8 {
            var other = handler.openSession()
            XCTAssertEqual(
                handler.code(.login(role: .cryptoUser, user: "carol", password: "no-\(attempt)"), &other), .loginFailed)
        }
        var last = handler.openSession()
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "carol", password: "pw"), &last), .success)
    }

    func testUserManagementRoles() {
        var officer = node.officerSession()
        XCTAssertEqual(handler.code(.createUser(role: .cryptoUser, name: "dave", password: "pw"), &officer), .success)
        XCTAssertEqual(
            handler.code(.createUser(role: .cryptoUser, name: "dave", password: "pw"), &officer), .userExists)
        XCTAssertEqual(
            handler.code(.createUser(role: .cryptoUser, name: "bad name", password: "pw"), &officer), .invalidArgument)
        XCTAssertEqual(handler.code(.deleteUser(name: "admin"), &officer), .permissionDenied)
        XCTAssertEqual(handler.code(.deleteUser(name: "ghost"), &officer), .userNotFound)
        XCTAssertEqual(handler.code(.changePassword(name: "ghost", newPassword: "x"), &officer), .userNotFound)

        var dave = handler.openSession()
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "dave", password: "pw"), &dave), .success)
        XCTAssertEqual(
            handler.code(.createUser(role: .cryptoUser, name: "eve", password: "pw"), &dave), .permissionDenied)
        XCTAssertEqual(handler.code(.deleteUser(name: "admin"), &dave), .permissionDenied)
        XCTAssertEqual(handler.code(.changePassword(name: "admin", newPassword: "x"), &dave), .permissionDenied)
        XCTAssertEqual(handler.code(.changePassword(name: "dave", newPassword: "pw2"), &dave), .success)
        guard case .users(let users) = handler.ok(.listUsers, &dave) else { return XCTFail("no users") }
        XCTAssertEqual(users.map(\.name), ["admin", "dave"])

        // A second officer makes deleting the first possible once it logged out; the last one stays.
        XCTAssertEqual(
            handler.code(.createUser(role: .cryptoOfficer, name: "officer2", password: "pw"), &officer), .success)
        var second = handler.openSession()
        XCTAssertEqual(handler.code(.login(role: .cryptoOfficer, user: "officer2", password: "pw"), &second), .success)
        XCTAssertEqual(handler.code(.deleteUser(name: "admin"), &second), .userLoggedIn)
        XCTAssertEqual(handler.code(.deleteUser(name: "dave"), &second), .userLoggedIn)
        XCTAssertEqual(handler.code(.logout, &officer), .success)
        XCTAssertEqual(handler.code(.logout, &dave), .success)
        XCTAssertEqual(handler.code(.deleteUser(name: "admin"), &second), .success)
        XCTAssertEqual(handler.code(.deleteUser(name: "dave"), &second), .success)
        XCTAssertEqual(
            handler.code(.createUser(role: .cryptoOfficer, name: "admin", password: "again"), &second), .success)
        XCTAssertEqual(handler.code(.deleteUser(name: "admin"), &second), .success)
        XCTAssertEqual(handler.code(.deleteUser(name: "officer2"), &second), .permissionDenied)
        var gone = handler.openSession()
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "dave", password: "pw2"), &gone), .loginFailed)
    }

    func testDeleteUserRulesAndANewUserOfTheSameName() throws {
        var bob = node.userSession("bob")
        let oldID = try XCTUnwrap(bob.userID)
        let pair = try XCTUnwrap(
            handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "b", isSession: false, isExtractable: false),
                &bob
            ).pair)
        let secret = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "b", isSession: false, isExtractable: false),
                &bob
            ).handle)
        var officer = node.officerSession()
        let owns = handler.handle(.deleteUser(name: "bob"), session: &officer)
        XCTAssertEqual(owns.code, .userOwnsKeys)
        XCTAssertEqual(
            owns.detail,
            "user bob owns 3 keys; delete them first, logged in as bob with key_mgmt_util deleteKey")
        for handle in [pair.publicKey, pair.privateKey, secret] {
            XCTAssertEqual(handler.code(.deleteKey(handle), &bob), .success)
        }
        let busy = handler.handle(.deleteUser(name: "bob"), session: &officer)
        XCTAssertEqual(busy.code, .userLoggedIn)
        XCTAssertEqual(busy.detail, "user bob is logged in (1 session on node 5); it must log out first")
        XCTAssertEqual(handler.code(.logout, &bob), .success)
        XCTAssertEqual(handler.code(.deleteUser(name: "bob"), &officer), .success)
        XCTAssertEqual(handler.code(.deleteUser(name: "bob"), &officer), .userNotFound)

        // A new bob is a new user: a new id, none of the old bob's keys.
        var newBob = node.userSession("bob")
        let newID = try XCTUnwrap(newBob.userID)
        XCTAssertNotEqual(newID, oldID)
        XCTAssertEqual(handler.userID("bob", &officer), newID)
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter()), &newBob).handles, [])
        let digest = [UInt8](repeating: 1, count: 32)
        XCTAssertEqual(
            handler.code(.sign(key: pair.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), &newBob),
            .invalidHandle)
        let made = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "n", isSession: false, isExtractable: false),
                &newBob
            ).handle)
        guard case .attributes(let attributes) = handler.ok(.getAttributes(made), &newBob) else {
            return XCTFail("no attributes")
        }
        XCTAssertEqual(attributes.owner, newID, "getAttributes names the owner by the id listUsers shows")
    }

    func testTheSameWrongPasswordCountsOnce() throws {
        _ = node.userSession("lee", password: "right")
        for _ in 0..<7 {
            var session = handler.openSession()
            XCTAssertEqual(
                handler.code(.login(role: .cryptoUser, user: "lee", password: "typo"), &session), .loginFailed)
        }
        var officer = node.officerSession()
        guard case .users(let users) = handler.ok(.listUsers, &officer) else { return XCTFail("no users") }
        XCTAssertEqual(users.first { $0.name == "lee" }?.failedLogins, 1)
        var session = handler.openSession()
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "lee", password: "right"), &session), .success)
    }

    // MARK: Keys

    func testOfficerCannotUseKeys() {
        var officer = node.officerSession()
        XCTAssertEqual(
            handler.code(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "", isSession: false, isExtractable: false),
                &officer), .permissionDenied)
        XCTAssertEqual(handler.code(.findKeys(KeyFilter()), &officer), .permissionDenied)
        XCTAssertEqual(handler.code(.generateRandom(count: 16), &officer), .success)
    }

    func testOwnershipAndInvalidHandles() throws {
        var alice = node.userSession("alice")
        var bob = node.userSession("bob")
        let aliceKey = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "a", isSession: false, isExtractable: true),
                &alice
            ).handle)
        XCTAssertEqual(handler.code(.getAttributes(aliceKey), &bob), .keyAccessDenied)
        XCTAssertEqual(handler.code(.deleteKey(aliceKey), &bob), .keyAccessDenied)
        XCTAssertEqual(handler.code(.wrapKey(key: aliceKey, wrappingKey: aliceKey), &bob), .keyAccessDenied)
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter()), &bob).handles, [])
        XCTAssertEqual(handler.code(.getAttributes(aliceKey + 16), &alice), .invalidHandle)
        XCTAssertEqual(handler.code(.deleteKey(aliceKey), &alice), .success)
        XCTAssertEqual(handler.code(.getAttributes(aliceKey), &alice), .invalidHandle)
        XCTAssertEqual(handler.code(.deleteKey(aliceKey), &alice), .invalidHandle)
        XCTAssertEqual(try node.state.store.keyRecord(handle: aliceKey)?.isDeleted, true)
        XCTAssertEqual(try node.state.store.keyRecord(handle: aliceKey)?.sealedMaterial, [])
        try node.reopen()
        alice = node.userSession("alice")
        XCTAssertEqual(handler.code(.getAttributes(aliceKey), &alice), .invalidHandle)
    }

    func testSymmetricKeySizes() {
        var alice = node.userSession("alice")
        func generate(_ type: KeyType, _ size: UInt32) -> HSMReturnCode {
            handler.code(
                .generateSymmetricKey(keyType: type, byteCount: size, label: "", isSession: true, isExtractable: false),
                &alice)
        }
        for size: UInt32 in [16, 24, 32] { XCTAssertEqual(generate(.aes, size), .success) }
        for size: UInt32 in [0, 8, 33] { XCTAssertEqual(generate(.aes, size), .invalidArgument) }
        for size: UInt32 in [1, 64] { XCTAssertEqual(generate(.genericSecret, size), .success) }
        for size: UInt32 in [0, 65] { XCTAssertEqual(generate(.genericSecret, size), .invalidArgument) }
        XCTAssertEqual(generate(.rsa, 256), .invalidArgument)
        XCTAssertEqual(
            handler.code(
                .generateRSAKeyPair(
                    modulusBits: 1024, publicExponent: 65537, label: "", isSession: true, isExtractable: false), &alice),
            .invalidArgument)
        XCTAssertEqual(
            handler.code(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65536, label: "", isSession: true, isExtractable: false), &alice),
            .invalidArgument)
    }

    func testSignDecryptAndTheirChecks() throws {
        var alice = node.userSession("alice")
        let pair = try XCTUnwrap(
            handler.ok(
                .generateRSAKeyPair(
                    modulusBits: 2048, publicExponent: 65537, label: "web", isSession: false, isExtractable: false),
                &alice
            ).pair)
        let spki = try XCTUnwrap(handler.ok(.exportPublicKey(pair.privateKey), &alice).bytes)
        XCTAssertEqual(handler.ok(.exportPublicKey(pair.publicKey), &alice).bytes, spki)
        let publicKey = try RSAPublicKey(publicKeyInfo: spki, context: sharedContext)
        XCTAssertEqual(publicKey.modulusBits, 2048)

        let digest = try Digest.hash(Array("hello".utf8), algorithm: .sha384, context: sharedContext)
        for mechanism: SignMechanism in [
            .pkcs1(digest: .sha384), .pss(digest: .sha384, mgf1Digest: .sha384, saltLength: 48),
        ] {
            let signature = try XCTUnwrap(
                handler.ok(.sign(key: pair.privateKey, mechanism: mechanism, data: digest), &alice).bytes)
            XCTAssertTrue(publicKey.verify(signature: signature, digest: digest, mechanism: mechanism))
        }
        XCTAssertEqual(
            handler.code(.sign(key: pair.privateKey, mechanism: .pkcs1(digest: .sha256), data: digest), &alice),
            .invalidArgument)
        XCTAssertEqual(
            handler.code(.sign(key: pair.privateKey, mechanism: .raw, data: digest), &alice), .invalidArgument)
        XCTAssertEqual(
            handler.code(
                .sign(
                    key: pair.privateKey, mechanism: .pss(digest: .sha384, mgf1Digest: .sha384, saltLength: 1000),
                    data: digest), &alice),
            .invalidArgument)
        XCTAssertEqual(
            handler.code(.sign(key: pair.publicKey, mechanism: .pkcs1(digest: .sha384), data: digest), &alice),
            .invalidKeyType)

        let secret = Array("pre-master secret, 48 bytes long, for TLS 1.2!!!".utf8)
        let ciphertext = try publicKey.encrypt(secret, mechanism: .pkcs1)
        XCTAssertEqual(
            handler.ok(.decrypt(key: pair.privateKey, mechanism: .pkcs1, data: ciphertext), &alice).bytes, secret)
        let oaep = DecryptMechanism.oaep(digest: .sha256, mgf1Digest: .sha256, label: [])
        XCTAssertEqual(
            handler.code(.decrypt(key: pair.privateKey, mechanism: oaep, data: ciphertext), &alice), .decryptFailed)
        XCTAssertEqual(
            handler.code(.decrypt(key: pair.privateKey, mechanism: .pkcs1, data: [1, 2, 3]), &alice), .decryptFailed)
        XCTAssertEqual(
            handler.code(.decrypt(key: pair.publicKey, mechanism: .pkcs1, data: ciphertext), &alice), .invalidKeyType)

        var bob = node.userSession("bob")
        XCTAssertEqual(
            handler.code(.sign(key: pair.privateKey, mechanism: .pkcs1(digest: .sha384), data: digest), &bob),
            .keyAccessDenied)

        guard case .nodeInfo(let info) = handler.ok(.nodeInfo, &alice) else { return XCTFail("no info") }
        XCTAssertEqual(info.signOperations, 2)
        XCTAssertEqual(info.decryptOperations, 1)
        XCTAssertEqual(info.tokenKeyCount, 2)
    }

    func testImportThroughWrapAndUnwrap() throws {
        var alice = node.userSession("alice")
        let wrap = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(
                    keyType: .aes, byteCount: 16, label: "wrapping_key_for_import", isSession: true,
                    isExtractable: false), &alice
            ).handle)
        let hostKey = try RSAPrivateKey.generate(bits: 2048, publicExponent: 65537, context: sharedContext)
        let wrapped = try XCTUnwrap(
            handler.ok(.wrapHostKey(wrappingKey: wrap, keyData: try hostKey.pkcs8DER()), &alice).bytes)
        let imported = try XCTUnwrap(
            handler.ok(
                .unwrapKey(
                    wrappingKey: wrap, wrappedKey: wrapped, label: "imported", isSession: false, isExtractable: false),
                &alice
            ).handle)
        guard case .attributes(let attributes) = handler.ok(.getAttributes(imported), &alice) else {
            return XCTFail("")
        }
        XCTAssertEqual(attributes.publicKeyInfo, hostKey.publicKeyInfo)
        XCTAssertEqual(attributes.keyClass, .privateKey)
        XCTAssertEqual(attributes.label, "imported")
        XCTAssertEqual(handler.code(.wrapKey(key: imported, wrappingKey: wrap), &alice), .keyNotExtractable)

        let before = try node.state.store.keyRecords().count
        var damaged = wrapped
        damaged[10] ^= 1
        XCTAssertEqual(
            handler.code(
                .unwrapKey(wrappingKey: wrap, wrappedKey: damaged, label: "x", isSession: false, isExtractable: false),
                &alice), .unwrapFailed)
        let notAKey = try XCTUnwrap(
            handler.ok(.wrapHostKey(wrappingKey: wrap, keyData: Array("not a key".utf8)), &alice).bytes)
        XCTAssertEqual(
            handler.code(
                .unwrapKey(wrappingKey: wrap, wrappedKey: notAKey, label: "x", isSession: false, isExtractable: false),
                &alice), .invalidKeyData)
        XCTAssertEqual(try node.state.store.keyRecords().count, before, "nothing is stored on failure")
        XCTAssertEqual(handler.code(.wrapHostKey(wrappingKey: imported, keyData: [1]), &alice), .invalidKeyType)

        // An extractable key comes back out wrapped, and only wrapped.
        let exportable = try XCTUnwrap(
            handler.ok(
                .unwrapKey(
                    wrappingKey: wrap, wrappedKey: wrapped, label: "exportable", isSession: false, isExtractable: true),
                &alice
            ).handle)
        let exported = try XCTUnwrap(handler.ok(.wrapKey(key: exportable, wrappingKey: wrap), &alice).bytes)
        guard case .secret(let kek) = try XCTUnwrap(node.state.object(wrap, sessionID: alice.id)).material else {
            return XCTFail("")
        }
        let der = try AESKeyWrap.unwrap(wrappedKey: exported, kek: kek, context: sharedContext)
        XCTAssertEqual(try RSAPrivateKey(der: der, context: sharedContext).publicKeyInfo, hostKey.publicKeyInfo)
        XCTAssertEqual(handler.code(.exportPublicKey(wrap), &alice), .invalidKeyType)
    }

    func testSessionKeysBelongToTheirSessionAndDieWithIt() throws {
        var alice = node.userSession("alice")
        var aliceAgain = handler.openSession()
        XCTAssertEqual(
            handler.code(.login(role: .cryptoUser, user: "alice", password: "user-pw"), &aliceAgain), .success)
        let token = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "t", isSession: false, isExtractable: false),
                &alice
            ).handle)
        let session = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "s", isSession: true, isExtractable: false),
                &alice
            ).handle)
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter()), &alice).handles, [token, session])
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter(isSession: true)), &alice).handles, [session])
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter(isSession: false)), &alice).handles, [token])
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter(label: "s")), &alice).handles, [session])
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter(keyClass: .privateKey)), &alice).handles, [])
        XCTAssertEqual(handler.ok(.findKeys(KeyFilter()), &aliceAgain).handles, [token])
        XCTAssertEqual(handler.code(.getAttributes(session), &aliceAgain), .invalidHandle)
        XCTAssertNil(try node.state.store.keyRecord(handle: session), "session keys are never stored")

        XCTAssertEqual(handler.code(.logout, &alice), .success)
        XCTAssertEqual(handler.code(.login(role: .cryptoUser, user: "alice", password: "user-pw"), &alice), .success)
        XCTAssertEqual(handler.code(.getAttributes(session), &alice), .invalidHandle)
        let another = try XCTUnwrap(
            handler.ok(
                .generateSymmetricKey(keyType: .aes, byteCount: 16, label: "s2", isSession: true, isExtractable: false),
                &alice
            ).handle)
        handler.closeSession(&alice)
        guard case .nodeInfo(let info) = handler.ok(.nodeInfo, &aliceAgain) else { return XCTFail("") }
        XCTAssertEqual(info.sessionKeyCount, 0)
        XCTAssertNil(node.state.object(another, sessionID: alice.id))
    }

    func testRandomBounds() {
        var alice = node.userSession("alice")
        XCTAssertEqual(handler.ok(.generateRandom(count: 65536), &alice).bytes?.count, 65536)
        XCTAssertEqual(handler.code(.generateRandom(count: 0), &alice), .invalidArgument)
        XCTAssertEqual(handler.code(.generateRandom(count: 65537), &alice), .invalidArgument)
    }

    // MARK: Frames

    func testFramesAnswerWithTheRequestIDAndRejectMalformedOnes() throws {
        var session = handler.openSession()
        let good = Frame(operation: Operation.nodeInfo.rawValue, requestID: 77, payload: [])
        let answer = try handler.answer(good, session: &session).get()
        XCTAssertEqual(answer.requestID, 77)
        XCTAssertEqual(answer.operation, 0x8f)
        XCTAssertEqual(try HSMResponse.decode(operation: .nodeInfo, payload: answer.payload).code, .success)

        let bad: [Frame] = [
            Frame(operation: 0x7e, requestID: 1, payload: []),
            Frame(operation: Operation.login.rawValue, requestID: 1, payload: [1, 0, 0]),
            Frame(operation: Operation.nodeInfo.rawValue, requestID: 1, payload: [0]),
            Frame(operation: Operation.nodeInfo.rawValue | 0x80, requestID: 1, payload: []),
            Frame(operation: Operation.sign.rawValue, requestID: 1, payload: [UInt8](repeating: 0xff, count: 64)),
        ]
        for frame in bad {
            guard case .failure = handler.answer(frame, session: &session) else {
                return XCTFail("accepted \(frame)")
            }
        }
        // Random payloads for every operation never trap.
        var generator = SystemRandomNumberGenerator()
        for operation in Operation.allCases {
            for length in [0, 1, 5, 13, 40, 300] {
                let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                _ = handler.answer(
                    Frame(operation: operation.rawValue, requestID: 2, payload: payload), session: &session)
            }
        }
    }
}
