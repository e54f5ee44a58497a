// Every request a node serves, and its encoding. The operation byte is the frame's;
// the payload is the request's fields in order.

public enum Operation: UInt8, Sendable, CaseIterable {
    case login = 0x01
    case logout = 0x02
    case generateSymmetricKey = 0x03
    case generateRSAKeyPair = 0x04
    case wrapHostKey = 0x05
    case unwrapKey = 0x06
    case wrapKey = 0x07
    case findKeys = 0x08
    case getAttributes = 0x09
    case deleteKey = 0x0a
    case exportPublicKey = 0x0b
    case sign = 0x0c
    case decrypt = 0x0d
    case generateRandom = 0x0e
    case nodeInfo = 0x0f
    case createUser = 0x10
    case deleteUser = 0x11
    case changePassword = 0x12
    case listUsers = 0x13
    case generateECKeyPair = 0x14
}

public enum HSMRequest: Equatable, Sendable {
    case login(role: UserRole, user: String, password: String)
    case logout
    case generateSymmetricKey(keyType: KeyType, byteCount: UInt32, label: String, isSession: Bool, isExtractable: Bool)
    case generateRSAKeyPair(
        modulusBits: UInt32, publicExponent: UInt64, label: String, isSession: Bool, isExtractable: Bool)
    /// Any curve id travels; a node makes keys only on `ECCurve.supported` and answers
    /// `0x11` naming any other curve.
    case generateECKeyPair(curve: ECCurve, label: String, isSession: Bool, isExtractable: Bool)
    /// Plaintext key (PKCS#8, PKCS#1 or SEC1 DER) sent over the TLS channel for the HSM to wrap
    /// under `wrappingKey` (RFC 5649); the node never stores or logs it.
    case wrapHostKey(wrappingKey: KeyHandle, keyData: [UInt8])
    /// An RFC 5649 wrapped RSA or EC private key (PKCS#8, PKCS#1 or SEC1 DER), unwrapped
    /// into a new private key object.
    case unwrapKey(wrappingKey: KeyHandle, wrappedKey: [UInt8], label: String, isSession: Bool, isExtractable: Bool)
    /// Exports an extractable key, wrapped under `wrappingKey`.
    case wrapKey(key: KeyHandle, wrappingKey: KeyHandle)
    case findKeys(KeyFilter)
    case getAttributes(KeyHandle)
    case deleteKey(KeyHandle)
    case exportPublicKey(KeyHandle)
    case sign(key: KeyHandle, mechanism: SignMechanism, data: [UInt8])
    case decrypt(key: KeyHandle, mechanism: DecryptMechanism, data: [UInt8])
    case generateRandom(count: UInt32)
    case nodeInfo
    case createUser(role: UserRole, name: String, password: String)
    case deleteUser(name: String)
    case changePassword(name: String, newPassword: String)
    case listUsers

    public var operation: Operation {
        switch self {
        case .login: return .login
        case .logout: return .logout
        case .generateSymmetricKey: return .generateSymmetricKey
        case .generateRSAKeyPair: return .generateRSAKeyPair
        case .generateECKeyPair: return .generateECKeyPair
        case .wrapHostKey: return .wrapHostKey
        case .unwrapKey: return .unwrapKey
        case .wrapKey: return .wrapKey
        case .findKeys: return .findKeys
        case .getAttributes: return .getAttributes
        case .deleteKey: return .deleteKey
        case .exportPublicKey: return .exportPublicKey
        case .sign: return .sign
        case .decrypt: return .decrypt
        case .generateRandom: return .generateRandom
        case .nodeInfo: return .nodeInfo
        case .createUser: return .createUser
        case .deleteUser: return .deleteUser
        case .changePassword: return .changePassword
        case .listUsers: return .listUsers
        }
    }

    /// Operations that change nothing, so a client may retry them on another node.
    public var isIdempotent: Bool {
        switch self {
        case .sign, .decrypt, .findKeys, .getAttributes, .exportPublicKey, .generateRandom, .nodeInfo, .listUsers:
            return true
        default:
            return false
        }
    }

    public func encodedPayload() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .login(let role, let user, let password):
            w.write(role.rawValue)
            w.write(user)
            w.write(password)
        case .logout, .nodeInfo, .listUsers:
            break
        case .generateSymmetricKey(let keyType, let byteCount, let label, let isSession, let isExtractable):
            w.write(keyType.rawValue)
            w.write(byteCount)
            w.write(label)
            w.write(isSession)
            w.write(isExtractable)
        case .generateRSAKeyPair(let bits, let exponent, let label, let isSession, let isExtractable):
            w.write(bits)
            w.write(exponent)
            w.write(label)
            w.write(isSession)
            w.write(isExtractable)
        case .generateECKeyPair(let curve, let label, let isSession, let isExtractable):
            w.write(curve.rawValue)
            w.write(label)
            w.write(isSession)
            w.write(isExtractable)
        case .wrapHostKey(let wrappingKey, let keyData):
            w.write(wrappingKey)
            w.write(keyData)
        case .unwrapKey(let wrappingKey, let wrappedKey, let label, let isSession, let isExtractable):
            w.write(wrappingKey)
            w.write(wrappedKey)
            w.write(label)
            w.write(isSession)
            w.write(isExtractable)
        case .wrapKey(let key, let wrappingKey):
            w.write(key)
            w.write(wrappingKey)
        case .findKeys(let filter):
            w.writeOptional(filter.keyClass) { $0.write($1.rawValue) }
            w.writeOptional(filter.keyType) { $0.write($1.rawValue) }
            w.writeOptional(filter.label) { $0.write($1) }
            w.writeOptional(filter.isSession) { $0.write($1) }
        case .getAttributes(let handle), .deleteKey(let handle), .exportPublicKey(let handle):
            w.write(handle)
        case .sign(let key, let mechanism, let data):
            w.write(key)
            mechanism.encode(into: &w)
            w.write(data)
        case .decrypt(let key, let mechanism, let data):
            w.write(key)
            mechanism.encode(into: &w)
            w.write(data)
        case .generateRandom(let count):
            w.write(count)
        case .createUser(let role, let name, let password):
            w.write(role.rawValue)
            w.write(name)
            w.write(password)
        case .deleteUser(let name):
            w.write(name)
        case .changePassword(let name, let newPassword):
            w.write(name)
            w.write(newPassword)
        }
        return w.bytes
    }

    /// Decodes a request; any malformed, unknown or trailing content throws.
    public static func decode(operation rawOperation: UInt8, payload: [UInt8]) throws -> HSMRequest {
        guard let operation = Operation(rawValue: rawOperation) else {
            throw WireError.unknownOperation(rawOperation)
        }
        var r = WireReader(payload)
        let request: HSMRequest
        switch operation {
        case .login:
            request = .login(
                role: try r.readEnum(UserRole.self, "role"), user: try r.readString("user name", maximum: 64),
                password: try r.readString("password", maximum: 256))
        case .logout: request = .logout
        case .nodeInfo: request = .nodeInfo
        case .listUsers: request = .listUsers
        case .generateSymmetricKey:
            request = .generateSymmetricKey(
                keyType: try r.readEnum(KeyType.self, "key type"), byteCount: try r.readUInt32("key size"),
                label: try r.readString("label", maximum: 256), isSession: try r.readBool("session flag"),
                isExtractable: try r.readBool("extractable flag"))
        case .generateRSAKeyPair:
            request = .generateRSAKeyPair(
                modulusBits: try r.readUInt32("modulus bits"), publicExponent: try r.readUInt64("public exponent"),
                label: try r.readString("label", maximum: 256), isSession: try r.readBool("session flag"),
                isExtractable: try r.readBool("extractable flag"))
        case .generateECKeyPair:
            request = .generateECKeyPair(
                curve: ECCurve(rawValue: try r.readUInt32("curve id")), label: try r.readString("label", maximum: 256),
                isSession: try r.readBool("session flag"), isExtractable: try r.readBool("extractable flag"))
        case .wrapHostKey:
            request = .wrapHostKey(
                wrappingKey: try r.readUInt64("wrapping key handle"),
                keyData: try r.readBytes("key data", maximum: 65536))
        case .unwrapKey:
            request = .unwrapKey(
                wrappingKey: try r.readUInt64("wrapping key handle"),
                wrappedKey: try r.readBytes("wrapped key", maximum: 65536),
                label: try r.readString("label", maximum: 256), isSession: try r.readBool("session flag"),
                isExtractable: try r.readBool("extractable flag"))
        case .wrapKey:
            request = .wrapKey(
                key: try r.readUInt64("key handle"), wrappingKey: try r.readUInt64("wrapping key handle"))
        case .findKeys:
            let keyClass = try r.readOptional("key class") { try $0.readEnum(KeyClass.self, "key class") }
            let keyType = try r.readOptional("key type") { try $0.readEnum(KeyType.self, "key type") }
            let label = try r.readOptional("label") { try $0.readString("label", maximum: 256) }
            let isSession = try r.readOptional("session filter") { try $0.readBool("session filter") }
            request = .findKeys(KeyFilter(keyClass: keyClass, keyType: keyType, label: label, isSession: isSession))
        case .getAttributes: request = .getAttributes(try r.readUInt64("key handle"))
        case .deleteKey: request = .deleteKey(try r.readUInt64("key handle"))
        case .exportPublicKey: request = .exportPublicKey(try r.readUInt64("key handle"))
        case .sign:
            request = .sign(
                key: try r.readUInt64("key handle"), mechanism: try SignMechanism.decode(from: &r),
                data: try r.readBytes("data", maximum: 1024))
        case .decrypt:
            request = .decrypt(
                key: try r.readUInt64("key handle"), mechanism: try DecryptMechanism.decode(from: &r),
                data: try r.readBytes("data", maximum: 1024))
        case .generateRandom: request = .generateRandom(count: try r.readUInt32("byte count"))
        case .createUser:
            request = .createUser(
                role: try r.readEnum(UserRole.self, "role"), name: try r.readString("user name", maximum: 64),
                password: try r.readString("password", maximum: 256))
        case .deleteUser: request = .deleteUser(name: try r.readString("user name", maximum: 64))
        case .changePassword:
            request = .changePassword(
                name: try r.readString("user name", maximum: 64),
                newPassword: try r.readString("password", maximum: 256))
        }
        try r.finish()
        return request
    }
}

extension SignMechanism {
    func encode(into w: inout WireWriter) {
        switch self {
        case .pkcs1(let digest):
            w.write(UInt8(1))
            w.write(digest.rawValue)
        case .pss(let digest, let mgf1Digest, let saltLength):
            w.write(UInt8(2))
            w.write(digest.rawValue)
            w.write(mgf1Digest.rawValue)
            w.write(saltLength)
        case .raw:
            w.write(UInt8(3))
        case .ecdsa(let digest):
            w.write(UInt8(4))
            w.write(digest.rawValue)
        }
    }

    static func decode(from r: inout WireReader) throws -> SignMechanism {
        switch try r.readUInt8("sign mechanism") {
        case 1: return .pkcs1(digest: try r.readEnum(DigestAlgorithm.self, "digest"))
        case 2:
            let digest = try r.readEnum(DigestAlgorithm.self, "digest")
            let mgf1 = try r.readEnum(DigestAlgorithm.self, "MGF1 digest")
            guard digest != .none, mgf1 != .none else { throw WireError.invalidValue("PSS needs a digest") }
            return .pss(digest: digest, mgf1Digest: mgf1, saltLength: try r.readUInt32("salt length"))
        case 3: return .raw
        case 4: return .ecdsa(digest: try r.readEnum(DigestAlgorithm.self, "digest"))
        case let other: throw WireError.invalidValue("sign mechanism \(other)")
        }
    }
}

extension DecryptMechanism {
    func encode(into w: inout WireWriter) {
        switch self {
        case .raw: w.write(UInt8(1))
        case .pkcs1: w.write(UInt8(2))
        case .oaep(let digest, let mgf1Digest, let label):
            w.write(UInt8(3))
            w.write(digest.rawValue)
            w.write(mgf1Digest.rawValue)
            w.write(label)
        }
    }

    static func decode(from r: inout WireReader) throws -> DecryptMechanism {
        switch try r.readUInt8("decrypt mechanism") {
        case 1: return .raw
        case 2: return .pkcs1
        case 3:
            let digest = try r.readEnum(DigestAlgorithm.self, "digest")
            let mgf1 = try r.readEnum(DigestAlgorithm.self, "MGF1 digest")
            guard digest != .none, mgf1 != .none else { throw WireError.invalidValue("OAEP needs a digest") }
            return .oaep(digest: digest, mgf1Digest: mgf1, label: try r.readBytes("OAEP label", maximum: 1024))
        case let other: throw WireError.invalidValue("decrypt mechanism \(other)")
        }
    }
}
