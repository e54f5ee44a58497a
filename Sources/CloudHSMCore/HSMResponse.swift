// A node's answer: a return code, a human-readable detail, and on success a body whose
// shape the request's operation decides.

public enum ResponseBody: Equatable, Sendable {
    case empty
    case handle(KeyHandle)
    case keyPair(publicKey: KeyHandle, privateKey: KeyHandle)
    case bytes([UInt8])
    case handles([KeyHandle])
    case attributes(KeyAttributes)
    case nodeInfo(NodeInfo)
    case users([UserInfo])
}

public struct HSMResponse: Equatable, Sendable {
    public var code: HSMReturnCode
    public var detail: String
    public var body: ResponseBody

    public init(code: HSMReturnCode, detail: String = "", body: ResponseBody = .empty) {
        self.code = code
        self.detail = detail
        self.body = body
    }

    public static func success(_ body: ResponseBody = .empty) -> HSMResponse {
        HSMResponse(code: .success, body: body)
    }

    public static func failure(_ error: HSMError) -> HSMResponse {
        HSMResponse(code: error.code, detail: error.detail)
    }

    /// The body on success; the code and detail as an `HSMError` otherwise.
    public func get() throws -> ResponseBody {
        guard code.isSuccess else { throw HSMError(code, detail) }
        return body
    }

    public func encodedPayload() -> [UInt8] {
        var w = WireWriter()
        w.write(code.rawValue)
        w.write(detail)
        guard code.isSuccess else { return w.bytes }
        switch body {
        case .empty: break
        case .handle(let handle): w.write(handle)
        case .keyPair(let publicKey, let privateKey):
            w.write(publicKey)
            w.write(privateKey)
        case .bytes(let bytes): w.write(bytes)
        case .handles(let handles):
            w.write(UInt32(handles.count))
            for handle in handles { w.write(handle) }
        case .attributes(let a):
            w.write(a.handle)
            w.write(a.keyClass.rawValue)
            w.write(a.keyType.rawValue)
            w.write(a.label)
            w.write(a.owner)
            w.write(a.isToken)
            w.write(a.isExtractable)
            w.write(a.sizeInBits)
            w.write(a.publicKeyInfo)
        case .nodeInfo(let n):
            w.write(n.nodeId)
            w.write(n.clusterId)
            w.write(n.version)
            w.write(n.includesCounters)
            guard n.includesCounters else { break }
            w.write(n.tokenKeyCount)
            w.write(n.sessionKeyCount)
            w.write(n.signOperations)
            w.write(n.decryptOperations)
            w.write(n.userCount)
            w.write(n.ecdsaSignOperations)
        case .users(let users):
            w.write(UInt32(users.count))
            for user in users {
                w.write(user.id)
                w.write(user.role.rawValue)
                w.write(user.name)
                w.write(user.isLocked)
                w.write(user.failedLogins)
            }
        }
        return w.bytes
    }

    /// Decodes the answer to a request of `operation`.
    public static func decode(operation: Operation, payload: [UInt8]) throws -> HSMResponse {
        var r = WireReader(payload)
        let code = HSMReturnCode(rawValue: try r.readUInt32("return code"))
        let detail = try r.readString("detail", maximum: 4096)
        guard code.isSuccess else {
            try r.finish()
            return HSMResponse(code: code, detail: detail)
        }
        let body: ResponseBody
        switch operation {
        case .login, .logout, .deleteKey, .createUser, .deleteUser, .changePassword:
            body = .empty
        case .generateSymmetricKey, .unwrapKey:
            body = .handle(try r.readUInt64("key handle"))
        case .generateRSAKeyPair, .generateECKeyPair:
            body = .keyPair(
                publicKey: try r.readUInt64("public key handle"), privateKey: try r.readUInt64("private key handle"))
        case .wrapHostKey, .wrapKey, .exportPublicKey, .sign, .decrypt, .generateRandom:
            body = .bytes(try r.readBytes("result"))
        case .findKeys:
            let count = Int(try r.readUInt32("handle count"))
            guard count <= r.remaining / 8 else { throw WireError.truncated("key handles") }
            body = .handles(try (0..<count).map { _ in try r.readUInt64("key handle") })
        case .getAttributes:
            body = .attributes(
                KeyAttributes(
                    handle: try r.readUInt64("handle"), keyClass: try r.readEnum(KeyClass.self, "key class"),
                    keyType: try r.readEnum(KeyType.self, "key type"), label: try r.readString("label"),
                    owner: try r.readUInt32("owner"), isToken: try r.readBool("token flag"),
                    isExtractable: try r.readBool("extractable flag"), sizeInBits: try r.readUInt32("key size"),
                    publicKeyInfo: try r.readBytes("public key", maximum: 8192)))
        case .nodeInfo:
            let nodeId = try r.readUInt32("node id")
            let clusterId = try r.readString("cluster id")
            let version = try r.readString("version")
            // Counters follow only in an answer to a logged-in session.
            guard try r.readBool("counters flag") else {
                body = .nodeInfo(NodeInfo(nodeId: nodeId, clusterId: clusterId, version: version))
                break
            }
            body = .nodeInfo(
                NodeInfo(
                    nodeId: nodeId, clusterId: clusterId, version: version,
                    tokenKeyCount: try r.readUInt64("token key count"),
                    sessionKeyCount: try r.readUInt64("session key count"),
                    signOperations: try r.readUInt64("sign count"),
                    decryptOperations: try r.readUInt64("decrypt count"),
                    userCount: try r.readUInt32("user count"),
                    ecdsaSignOperations: try r.readUInt64("ECDSA sign count")))
        case .listUsers:
            let count = Int(try r.readUInt32("user count"))
            guard count <= r.remaining / 10 else { throw WireError.truncated("users") }
            body = .users(
                try (0..<count).map { _ in
                    UserInfo(
                        id: try r.readUInt32("user id"), role: try r.readEnum(UserRole.self, "role"),
                        name: try r.readString("user name"), isLocked: try r.readBool("locked flag"),
                        failedLogins: try r.readUInt32("failed logins"))
                })
        }
        try r.finish()
        return HSMResponse(code: code, detail: detail, body: body)
    }
}
