// Shared set-up for the node tests: a fresh initialised node in a temporary directory,
// with cheap password hashing so the tests stay fast.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMNode

let sharedContext = try! CryptoContext()

final class TestNode {
    let directory: String
    var state: NodeState
    var handler: RequestHandler

    init(nodeID: UInt8 = 5, executor: CryptoExecutor = InlineExecutor()) throws {
        directory = NSTemporaryDirectory() + "hsmnode-test-" + UUID().uuidString
        try NodeState.initialize(
            directory: directory, nodeID: nodeID, clusterID: "test-cluster", coPassword: "officer-pw",
            passwordIterations: 10, context: sharedContext)
        state = try NodeState(directory: directory, context: sharedContext)
        handler = RequestHandler(state: state, executor: executor)
    }

    /// Opens the directory again, as a restarted node would.
    func reopen() throws {
        state = try NodeState(directory: directory, context: sharedContext)
        handler = RequestHandler(state: state, executor: handler.executor)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func officerSession() -> Session {
        var session = handler.openSession()
        let response = handler.handle(
            .login(role: .cryptoOfficer, user: "admin", password: "officer-pw"), session: &session)
        XCTAssertEqual(response.code, .success, response.detail)
        return session
    }

    /// A logged-in session of crypto user `name`, created if needed.
    func userSession(_ name: String, password: String = "user-pw") -> Session {
        var officer = officerSession()
        _ = handler.handle(.createUser(role: .cryptoUser, name: name, password: password), session: &officer)
        handler.closeSession(&officer)
        var session = handler.openSession()
        let response = handler.handle(.login(role: .cryptoUser, user: name, password: password), session: &session)
        XCTAssertEqual(response.code, .success, response.detail)
        return session
    }
}

extension RequestHandler {
    /// Runs a request that must succeed and returns its body.
    func ok(_ request: HSMRequest, _ session: inout Session, file: StaticString = #filePath, line: UInt = #line)
        -> ResponseBody
    {
        let response = handle(request, session: &session)
        XCTAssertEqual(response.code, .success, "\(request.operation): \(response.detail)", file: file, line: line)
        return response.body
    }

    func code(_ request: HSMRequest, _ session: inout Session) -> HSMReturnCode {
        handle(request, session: &session).code
    }
}

extension RequestHandler {
    /// The id listUsers shows for `name`, if it is a live user.
    func userID(_ name: String, _ session: inout Session) -> UserID? {
        guard case .users(let users) = handle(.listUsers, session: &session).body else { return nil }
        return users.first { $0.name == name }?.id
    }
}

extension ResponseBody {
    var handle: KeyHandle? { if case .handle(let h) = self { return h } else { return nil } }
    var bytes: [UInt8]? { if case .bytes(let b) = self { return b } else { return nil } }
    var handles: [KeyHandle]? { if case .handles(let h) = self { return h } else { return nil } }
    var pair: (publicKey: KeyHandle, privateKey: KeyHandle)? {
        if case .keyPair(let p, let k) = self { return (p, k) } else { return nil }
    }
}
