// The node's rules, as a pure layer over NodeState: who may do what, on which keys,
// with which arguments. No sockets here, so every rule can be unit-tested.

import CloudHSMCore
import Foundation
import OpenSSLKit

/// One connection's login state.
public struct Session {
    public let id: UInt64
    public internal(set) var user: String?
    /// The logged-in user's cluster-wide id: what owns keys.
    public internal(set) var userID: UserID?
    public internal(set) var role: UserRole?

    public var isLoggedIn: Bool { user != nil }
}

/// Runs crypto work (RSA, EC) where the node decides: inline in tests, on the bounded worker
/// pool in the server. Throws `HSMError(.throttled)` when it cannot take more work.
public protocol CryptoExecutor: Sendable {
    func run<T>(_ work: @escaping () throws -> T) throws -> T
}

/// Runs the work on the calling thread.
public struct InlineExecutor: CryptoExecutor {
    public init() {}
    public func run<T>(_ work: @escaping () throws -> T) throws -> T { try work() }
}

public final class RequestHandler: @unchecked Sendable {
    // Stateless apart from two immutable references; NodeState is thread-safe.
    public let state: NodeState
    let executor: CryptoExecutor

    public init(state: NodeState, executor: CryptoExecutor = InlineExecutor()) {
        self.state = state
        self.executor = executor
    }

    public func openSession() -> Session {
        Session(id: state.openSession(), user: nil, userID: nil, role: nil)
    }

    /// Logs out and destroys the session's keys; for disconnects.
    public func closeSession(_ session: inout Session) {
        state.closeSession(session.id)
        session.user = nil
        session.userID = nil
        session.role = nil
    }

    /// Answers one request. Never throws: every failure becomes a return code.
    public func handle(_ request: HSMRequest, session: inout Session) -> HSMResponse {
        let operation = NodeMetrics.Operation(request)
        let started = operation == nil ? 0 : monotonicNanoseconds()
        let response: HSMResponse
        do {
            response = .success(try dispatch(request, session: &session))
        } catch let error as HSMError {
            response = .failure(error)
        } catch {
            response = .failure(HSMError(.internalError, "\(error)"))
        }
        count(request, operation, response, since: started)
        return response
    }

    /// The node's metrics for one answered request.
    private func count(
        _ request: HSMRequest, _ operation: NodeMetrics.Operation?, _ response: HSMResponse, since started: UInt64
    ) {
        let metrics = state.metrics
        if let operation {
            metrics.recordOperation(
                operation, succeeded: response.code.isSuccess,
                duration: Self.duration(nanoseconds: monotonicNanoseconds() &- started))
        }
        if response.code == .throttled { metrics.recordThrottled(.cryptoQueue) }
        if case .login = request {
            switch response.code {
            case .success: metrics.recordLogin(.success)
            case .userLocked: metrics.recordLogin(.locked)
            default: metrics.recordLogin(.failure)
            }
        }
    }

    /// `elapsed` as a Duration, without generic integer conversions on every request.
    private static func duration(nanoseconds elapsed: UInt64) -> Duration {
        Duration(
            secondsComponent: Int64(elapsed / 1_000_000_000),
            attosecondsComponent: Int64(elapsed % 1_000_000_000) * 1_000_000_000)
    }

    /// The response frame, or why the frame is not a valid request.
    public func answer(_ frame: Frame, session: inout Session) -> Result<Frame, WireError> {
        guard !frame.isResponse else { return .failure(.invalidValue("a response frame was sent as a request")) }
        let request: HSMRequest
        do {
            request = try HSMRequest.decode(operation: frame.operation, payload: frame.payload)
        } catch let error as WireError {
            return .failure(error)
        } catch {
            return .failure(.invalidValue("\(error)"))
        }
        let response = handle(request, session: &session)
        return .success(
            Frame(
                operation: frame.operation | Frame.responseBit, requestID: frame.requestID,
                payload: response.encodedPayload()))
    }

    private func dispatch(_ request: HSMRequest, session: inout Session) throws -> ResponseBody {
        switch request {
        case .login(let role, let user, let password):
            guard !session.isLoggedIn else { throw HSMError(.alreadyLoggedIn) }
            let record = try state.authenticate(role: role, name: user, password: password).get()
            guard state.logIn(sessionID: session.id, user: record.id) else { throw HSMError(.loginFailed) }
            session.user = record.name
            session.userID = record.id
            session.role = record.role
            return .empty
        case .nodeInfo:
            // Before login only who the node is (what a probe and a cluster-id check need).
            guard session.isLoggedIn else {
                return .nodeInfo(
                    NodeInfo(nodeId: UInt32(state.nodeID), clusterId: state.clusterID, version: NodeState.version))
            }
            return .nodeInfo(try state.info())
        default:
            break
        }
        guard let user = session.user, let userID = session.userID, let role = session.role else {
            throw HSMError(.notLoggedIn)
        }
        // A user deleted (here or on a peer) since this session logged in can do nothing more.
        guard state.isLive(userID) else {
            closeSession(&session)
            throw HSMError(.notLoggedIn, "user \(user) was deleted; the session has ended")
        }
        switch request {
        case .login, .nodeInfo:
            return .empty  // answered above
        case .logout:
            closeSession(&session)
            return .empty
        case .listUsers:
            return .users(
                try state.users().map { user, failures in
                    UserInfo(
                        id: user.id, role: user.role, name: user.name, isLocked: failures >= NodeState.lockoutThreshold,
                        failedLogins: UInt32(clamping: failures))
                })
        case .changePassword(let name, let newPassword):
            guard role == .cryptoOfficer || name == user else {
                throw HSMError(.permissionDenied, "a crypto user may change only its own password")
            }
            if let error = try state.changePassword(name: name, newPassword: newPassword) { throw error }
            return .empty
        case .createUser(let newRole, let name, let password):
            try requireOfficer(role)
            if let error = try state.createUser(role: newRole, name: name, password: password) { throw error }
            return .empty
        case .deleteUser(let name):
            try requireOfficer(role)
            guard let target = try state.user(named: name) else {
                // The same deleteUser sent to every node may have arrived here by replication.
                if try state.wasDeletedByPeer(name) { return .empty }
                throw HSMError(.userNotFound, "no user \(name)")
            }
            guard target.id != userID else { throw HSMError(.permissionDenied, "a user cannot delete itself") }
            if target.role == .cryptoOfficer,
                try state.users().filter({ $0.record.role == .cryptoOfficer }).count <= 1
            {
                throw HSMError(.permissionDenied, "cannot delete the last crypto officer")
            }
            // Refused while the user owns keys or is logged in on any node that answers.
            try state.deleteUser(target)
            return .empty
        case .generateRandom(let count):
            guard (1...65536).contains(count) else {
                throw HSMError(.invalidArgument, "random byte count must be 1...65536")
            }
            return .bytes(try SecureRandom.bytes(Int(count), context: state.context))
        default:
            guard role == .cryptoUser else {
                throw HSMError(.permissionDenied, "key operations need a crypto user (CU)")
            }
            return try keyOperation(request, user: userID, session: session)
        }
    }

    private func requireOfficer(_ role: UserRole) throws {
        guard role == .cryptoOfficer else {
            throw HSMError(.permissionDenied, "only a crypto officer may manage users")
        }
    }

    /// The caller's key `handle`: unknown or deleted handles and other users' keys fail
    /// with different codes, as CloudHSM does.
    private func key(_ handle: KeyHandle, user: UserID, session: Session) throws -> KeyObject {
        // A token key made on a peer may not have reached this node yet: missingKey asks.
        let object = try state.object(handle, sessionID: session.id) ?? state.missingKey(handle, sessionID: session.id)
        guard object.owner == user else {
            throw HSMError(.keyAccessDenied, "key \(handle) belongs to another user")
        }
        return object
    }

    private func wrappingKey(_ handle: KeyHandle, user: UserID, session: Session) throws -> [UInt8] {
        let object = try key(handle, user: user, session: session)
        guard object.attributes.keyType == .aes, case .secret(let bytes) = object.material else {
            throw HSMError(.invalidKeyType, "key \(handle) is not an AES key")
        }
        return bytes
    }

    private func privateKey(_ handle: KeyHandle, user: UserID, session: Session) throws -> RSAPrivateKey {
        let object = try key(handle, user: user, session: session)
        guard case .rsaPrivate(let privateKey) = object.material else {
            if case .ecPrivate = object.material {
                throw HSMError(.invalidKeyType, "key \(handle) is an EC private key: it signs with ECDSA only")
            }
            throw HSMError(.invalidKeyType, "key \(handle) is not an RSA private key")
        }
        return privateKey
    }

    private func ecPrivateKey(_ handle: KeyHandle, user: UserID, session: Session) throws -> ECPrivateKey {
        let object = try key(handle, user: user, session: session)
        guard case .ecPrivate(let privateKey) = object.material else {
            throw HSMError(.invalidKeyType, "key \(handle) is not an EC private key: ECDSA needs one")
        }
        return privateKey
    }

    private func keyOperation(_ request: HSMRequest, user: UserID, session: Session) throws -> ResponseBody {
        let context = state.context
        switch request {
        case .generateSymmetricKey(let keyType, let byteCount, let label, let isSession, let isExtractable):
            switch keyType {
            case .aes:
                guard [16, 24, 32].contains(byteCount) else {
                    throw HSMError(.invalidArgument, "an AES key is 16, 24 or 32 bytes")
                }
            case .genericSecret:
                guard (1...64).contains(byteCount) else {
                    throw HSMError(.invalidArgument, "a generic secret is 1 to 64 bytes")
                }
            case .rsa:
                throw HSMError(.invalidArgument, "RSA keys are made with generateRSAKeyPair")
            case .ec:
                throw HSMError(.invalidArgument, "EC keys are made with generateECKeyPair")
            }
            let bytes = try SecureRandom.bytes(Int(byteCount), context: context)
            let handles = try state.create(
                [
                    NodeState.NewKey(
                        keyClass: .secretKey, keyType: keyType, label: label, owner: user,
                        isExtractable: isExtractable, sizeInBits: byteCount * 8, publicKeyInfo: [],
                        material: .secret(bytes), plaintext: bytes)
                ], sessionID: isSession ? session.id : nil)
            return .handle(handles[0])

        case .generateRSAKeyPair(let bits, let exponent, let label, let isSession, let isExtractable):
            guard [2048, 3072, 4096].contains(bits) else {
                throw HSMError(.invalidArgument, "RSA keys are 2048, 3072 or 4096 bits")
            }
            guard RSAPublicExponent.isAllowed(exponent) else {
                throw HSMError(
                    .invalidArgument,
                    "the public exponent \(exponent) is not \(RSAPublicExponent.allowedDescription)")
            }
            let privateKey = try executor.run {
                try RSAPrivateKey.generate(bits: Int(bits), publicExponent: exponent, context: context)
            }
            let handles = try state.create(
                try Self.keyPair(.rsa(privateKey), label: label, owner: user, isExtractable: isExtractable),
                sessionID: isSession ? session.id : nil)
            return .keyPair(publicKey: handles[0], privateKey: handles[1])

        case .generateECKeyPair(let curve, let label, let isSession, let isExtractable):
            if let problem = curve.problem { throw HSMError(.invalidArgument, problem) }
            let privateKey = try executor.run { try ECPrivateKey.generate(curve: curve, context: context) }
            let handles = try state.create(
                try Self.keyPair(.ec(privateKey), label: label, owner: user, isExtractable: isExtractable),
                sessionID: isSession ? session.id : nil)
            return .keyPair(publicKey: handles[0], privateKey: handles[1])

        case .wrapHostKey(let wrappingKey, let keyData):
            let kek = try self.wrappingKey(wrappingKey, user: user, session: session)
            guard !keyData.isEmpty else { throw HSMError(.invalidArgument, "no key data to wrap") }
            return .bytes(try AESKeyWrap.wrap(key: keyData, kek: kek, context: context))

        case .unwrapKey(let wrappingKey, let wrappedKey, let label, let isSession, let isExtractable):
            let kek = try self.wrappingKey(wrappingKey, user: user, session: session)
            let privateKey = try executor.run { () throws -> PrivateKey in
                let der: [UInt8]
                do {
                    der = try AESKeyWrap.unwrap(wrappedKey: wrappedKey, kek: kek, context: context)
                } catch {
                    throw HSMError(.unwrapFailed)
                }
                do {
                    return try PrivateKey(der: der, context: context)
                } catch CryptoError.invalidArgument(let problem) {
                    // A well-formed key the HSMs cannot hold (an EC key on another curve).
                    throw HSMError(.invalidArgument, problem)
                } catch {
                    throw HSMError(.invalidKeyData, "\(error)")
                }
            }
            var pair = try Self.keyPair(privateKey, label: label, owner: user, isExtractable: isExtractable)
            pair.removeFirst()  // only the private key object is made
            let handles = try state.create(pair, sessionID: isSession ? session.id : nil)
            return .handle(handles[0])

        case .wrapKey(let handle, let wrappingKey):
            let object = try key(handle, user: user, session: session)
            let kek = try self.wrappingKey(wrappingKey, user: user, session: session)
            guard object.attributes.isExtractable else {
                throw HSMError(.keyNotExtractable, "key \(handle) is not extractable")
            }
            let plaintext: [UInt8]
            switch object.material {
            case .secret(let bytes): plaintext = bytes
            case .rsaPrivate(let privateKey): plaintext = try privateKey.pkcs8DER()
            case .ecPrivate(let privateKey): plaintext = try privateKey.pkcs8DER()
            case .rsaPublic, .ecPublic: plaintext = object.attributes.publicKeyInfo
            }
            return .bytes(try AESKeyWrap.wrap(key: plaintext, kek: kek, context: context))

        case .findKeys(let filter):
            return .handles(
                state.objects(owner: user, sessionID: session.id).filter { $0.matches(filter) }.map(\.handle))

        case .getAttributes(let handle):
            return .attributes(try key(handle, user: user, session: session).attributes)

        case .deleteKey(let handle):
            try state.delete(try key(handle, user: user, session: session))
            return .empty

        case .exportPublicKey(let handle):
            let object = try key(handle, user: user, session: session)
            guard [.rsa, .ec].contains(object.attributes.keyType), !object.attributes.publicKeyInfo.isEmpty else {
                throw HSMError(.invalidKeyType, "key \(handle) is not an RSA or EC key")
            }
            return .bytes(object.attributes.publicKeyInfo)

        case .sign(let handle, .ecdsa(let digest), let data):
            let privateKey = try ecPrivateKey(handle, user: user, session: session)
            if let problem = ECDSAInput.problem(length: data.count, digest: digest) {
                throw HSMError(.invalidArgument, problem)
            }
            let signature = try executor.run { () throws -> [UInt8] in
                do {
                    return try privateKey.sign(digest: data, algorithm: digest)
                } catch let error as CryptoError {
                    throw HSMError(.invalidArgument, "\(error)")
                }
            }
            state.countECDSASign()
            return .bytes(signature)

        case .sign(let handle, let mechanism, let data):
            let privateKey = try privateKey(handle, user: user, session: session)
            do {
                try mechanism.checkInput(length: data.count, modulusLength: privateKey.modulusLength)
            } catch {
                throw HSMError(.invalidArgument, "\(error)")
            }
            // A raw block not below n would fail inside OpenSSL, as an internal error.
            if mechanism == .raw, let problem = RawRSABlock.problem(data, modulus: privateKey.modulus) {
                throw HSMError(.invalidArgument, problem)
            }
            let signature = try executor.run { () throws -> [UInt8] in
                do {
                    return try privateKey.sign(digest: data, mechanism: mechanism)
                } catch let error as CryptoError {
                    throw HSMError(.invalidArgument, "\(error)")
                }
            }
            state.countSign()
            return .bytes(signature)

        case .decrypt(let handle, let mechanism, let data):
            let privateKey = try privateKey(handle, user: user, session: session)
            let plaintext = try executor.run { () throws -> [UInt8] in
                do {
                    return try privateKey.decrypt(data, mechanism: mechanism)
                } catch {
                    throw HSMError(.decryptFailed, "\(error)")
                }
            }
            state.countDecrypt()
            return .bytes(plaintext)

        default:
            throw HSMError(.invalidRequest, "unexpected operation")
        }
    }

    /// The public and private objects of one key pair, in that order.
    private static func keyPair(_ privateKey: PrivateKey, label: String, owner: UserID, isExtractable: Bool) throws
        -> [NodeState.NewKey]
    {
        let spki = privateKey.publicKeyInfo
        let bits = UInt32(privateKey.sizeInBits)
        let (publicMaterial, privateMaterial): (KeyMaterial, KeyMaterial)
        switch privateKey {
        case .rsa(let key): (publicMaterial, privateMaterial) = (.rsaPublic, .rsaPrivate(key))
        case .ec(let key): (publicMaterial, privateMaterial) = (.ecPublic, .ecPrivate(key))
        }
        return [
            NodeState.NewKey(
                keyClass: .publicKey, keyType: privateKey.keyType, label: label, owner: owner, isExtractable: true,
                sizeInBits: bits, publicKeyInfo: spki, material: publicMaterial, plaintext: []),
            NodeState.NewKey(
                keyClass: .privateKey, keyType: privateKey.keyType, label: label, owner: owner,
                isExtractable: isExtractable, sizeInBits: bits, publicKeyInfo: spki, material: privateMaterial,
                plaintext: try privateKey.pkcs8DER()),
        ]
    }
}

extension SignMechanism {
    /// The node's own input check, so a bad length is `.invalidArgument` before any work.
    func checkInput(length: Int, modulusLength: Int) throws {
        switch self {
        case .pkcs1(.none):
            guard length >= 1, length <= modulusLength - 11 else {
                throw CryptoError.invalidArgument("input of \(length) bytes does not fit PKCS#1 padding")
            }
        case .pkcs1(let digest), .pss(let digest, _, _):
            guard length == digest.outputLength else {
                throw CryptoError.invalidArgument("input is \(length) bytes, the digest is \(digest.outputLength)")
            }
        case .raw:
            guard length == modulusLength else {
                throw CryptoError.invalidArgument("raw input is \(length) bytes, the modulus is \(modulusLength)")
            }
        case .ecdsa:
            throw CryptoError.invalidArgument("ECDSA is a mechanism of EC keys, not of RSA keys")
        }
    }
}
