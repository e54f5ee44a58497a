// The node-to-node (replication) messages. They travel in ordinary frames with operation
// codes 0x40 and up, only on mutual-TLS connections between nodes; the node seals every
// payload under the cluster key before it goes out (see HSMNode's PeerEnvelope), so these
// encodings are what is inside the seal. Kept apart from HSMRequest so clients and tools
// never see peer operations.

public enum PeerOperation: UInt8, Sendable, CaseIterable {
    /// Every key's and user's version, and the sender's handle counter.
    case listVersions = 0x40
    /// The full records of some keys and users.
    case fetchRecords = 0x41
    /// Records to store if newer than what the receiver holds.
    case pushRecords = 0x42
}

/// A token key as it crosses between nodes: its material in the clear, which is why the
/// whole message is sealed under the cluster key.
public struct PeerKeyRecord: Equatable, Sendable {
    public var handle: KeyHandle
    public var keyClass: KeyClass
    public var keyType: KeyType
    public var label: String
    public var owner: String
    public var isExtractable: Bool
    public var sizeInBits: UInt32
    public var publicKeyInfo: [UInt8]
    /// Raw secret bytes or PKCS#8; empty for public keys and tombstones.
    public var material: [UInt8]
    public var version: UInt64
    public var isDeleted: Bool

    public init(
        handle: KeyHandle, keyClass: KeyClass, keyType: KeyType, label: String, owner: String, isExtractable: Bool,
        sizeInBits: UInt32, publicKeyInfo: [UInt8], material: [UInt8], version: UInt64, isDeleted: Bool
    ) {
        self.handle = handle
        self.keyClass = keyClass
        self.keyType = keyType
        self.label = label
        self.owner = owner
        self.isExtractable = isExtractable
        self.sizeInBits = sizeInBits
        self.publicKeyInfo = publicKeyInfo
        self.material = material
        self.version = version
        self.isDeleted = isDeleted
    }
}

/// A user as it crosses between nodes: the salted hash, never a password. The failed
/// login count stays on each node.
public struct PeerUserRecord: Equatable, Sendable {
    public var id: UInt32
    public var name: String
    public var role: UserRole
    public var salt: [UInt8]
    public var passwordHash: [UInt8]
    public var iterations: UInt32
    public var version: UInt64
    public var isDeleted: Bool

    public init(
        id: UInt32, name: String, role: UserRole, salt: [UInt8], passwordHash: [UInt8], iterations: UInt32,
        version: UInt64, isDeleted: Bool
    ) {
        self.id = id
        self.name = name
        self.role = role
        self.salt = salt
        self.passwordHash = passwordHash
        self.iterations = iterations
        self.version = version
        self.isDeleted = isDeleted
    }
}

/// What decides which of two versions of a record wins: the higher version, then a
/// tombstone over a live record, then (for users, whose equal versions can differ when two
/// nodes took the same change) a fingerprint of the content. Every node orders alike.
public struct RecordStamp: Comparable, Hashable, Sendable {
    public var version: UInt64
    public var isDeleted: Bool
    public var fingerprint: UInt64

    public init(version: UInt64, isDeleted: Bool, fingerprint: UInt64 = 0) {
        self.version = version
        self.isDeleted = isDeleted
        self.fingerprint = fingerprint
    }

    public static func < (a: RecordStamp, b: RecordStamp) -> Bool {
        if a.version != b.version { return a.version < b.version }
        if a.isDeleted != b.isDeleted { return !a.isDeleted }
        return a.fingerprint < b.fingerprint
    }
}

/// A node's inventory: what `listVersions` answers.
public struct PeerInventory: Equatable, Sendable {
    /// The sender's handle counter: every handle it made has a counter at or below this.
    public var handleCounter: UInt64
    public var keys: [KeyHandle: RecordStamp]
    public var users: [String: RecordStamp]

    public init(handleCounter: UInt64, keys: [KeyHandle: RecordStamp], users: [String: RecordStamp]) {
        self.handleCounter = handleCounter
        self.keys = keys
        self.users = users
    }
}

public enum PeerRequest: Equatable, Sendable {
    case listVersions
    case fetchRecords(keys: [KeyHandle], users: [String])
    case pushRecords(keys: [PeerKeyRecord], users: [PeerUserRecord])

    public var operation: PeerOperation {
        switch self {
        case .listVersions: return .listVersions
        case .fetchRecords: return .fetchRecords
        case .pushRecords: return .pushRecords
        }
    }

    public func encodedPayload() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .listVersions:
            break
        case .fetchRecords(let keys, let users):
            w.write(UInt32(keys.count))
            for key in keys { w.write(key) }
            w.write(UInt32(users.count))
            for user in users { w.write(user) }
        case .pushRecords(let keys, let users):
            PeerRecords(keys: keys, users: users).encode(into: &w)
        }
        return w.bytes
    }

    public static func decode(operation rawOperation: UInt8, payload: [UInt8]) throws -> PeerRequest {
        guard let operation = PeerOperation(rawValue: rawOperation) else {
            throw WireError.unknownOperation(rawOperation)
        }
        var r = WireReader(payload)
        let request: PeerRequest
        switch operation {
        case .listVersions:
            request = .listVersions
        case .fetchRecords:
            let keys = try r.readArray("key handles") { try $0.readUInt64("key handle") }
            let users = try r.readArray("user names") { try $0.readString("user name", maximum: 64) }
            request = .fetchRecords(keys: keys, users: users)
        case .pushRecords:
            let records = try PeerRecords.decode(from: &r)
            request = .pushRecords(keys: records.keys, users: records.users)
        }
        try r.finish()
        return request
    }
}

/// Keys and users together, as `fetchRecords` answers and `pushRecords` sends.
public struct PeerRecords: Equatable, Sendable {
    public var keys: [PeerKeyRecord]
    public var users: [PeerUserRecord]

    public init(keys: [PeerKeyRecord] = [], users: [PeerUserRecord] = []) {
        self.keys = keys
        self.users = users
    }

    func encode(into w: inout WireWriter) {
        w.write(UInt32(keys.count))
        for k in keys {
            w.write(k.handle)
            w.write(k.keyClass.rawValue)
            w.write(k.keyType.rawValue)
            w.write(k.label)
            w.write(k.owner)
            w.write(k.isExtractable)
            w.write(k.sizeInBits)
            w.write(k.publicKeyInfo)
            w.write(k.material)
            w.write(k.version)
            w.write(k.isDeleted)
        }
        w.write(UInt32(users.count))
        for u in users {
            w.write(u.id)
            w.write(u.name)
            w.write(u.role.rawValue)
            w.write(u.salt)
            w.write(u.passwordHash)
            w.write(u.iterations)
            w.write(u.version)
            w.write(u.isDeleted)
        }
    }

    static func decode(from r: inout WireReader) throws -> PeerRecords {
        let keys = try r.readArray("key records") { r in
            PeerKeyRecord(
                handle: try r.readUInt64("key handle"), keyClass: try r.readEnum(KeyClass.self, "key class"),
                keyType: try r.readEnum(KeyType.self, "key type"), label: try r.readString("label", maximum: 256),
                owner: try r.readString("owner", maximum: 64), isExtractable: try r.readBool("extractable flag"),
                sizeInBits: try r.readUInt32("key size"), publicKeyInfo: try r.readBytes("public key", maximum: 65536),
                material: try r.readBytes("key material", maximum: 65536), version: try r.readUInt64("version"),
                isDeleted: try r.readBool("deleted flag"))
        }
        let users = try r.readArray("user records") { r in
            PeerUserRecord(
                id: try r.readUInt32("user id"), name: try r.readString("user name", maximum: 64),
                role: try r.readEnum(UserRole.self, "role"), salt: try r.readBytes("salt", maximum: 256),
                passwordHash: try r.readBytes("password hash", maximum: 256),
                iterations: try r.readUInt32("iterations"), version: try r.readUInt64("version"),
                isDeleted: try r.readBool("deleted flag"))
        }
        return PeerRecords(keys: keys, users: users)
    }
}

public enum PeerResponseBody: Equatable, Sendable {
    /// `pushRecords`: the receiver holds every pushed record (or a newer version) on disk.
    case stored
    case inventory(PeerInventory)
    case records(PeerRecords)
}

public struct PeerResponse: Equatable, Sendable {
    public var code: HSMReturnCode
    public var detail: String
    public var body: PeerResponseBody

    public init(code: HSMReturnCode = .success, detail: String = "", body: PeerResponseBody = .stored) {
        self.code = code
        self.detail = detail
        self.body = body
    }

    public static func failure(_ error: HSMError) -> PeerResponse {
        PeerResponse(code: error.code, detail: error.detail)
    }

    public func encodedPayload() -> [UInt8] {
        var w = WireWriter()
        w.write(code.rawValue)
        w.write(detail)
        guard code.isSuccess else { return w.bytes }
        switch body {
        case .stored:
            break
        case .inventory(let inventory):
            w.write(inventory.handleCounter)
            w.write(UInt32(inventory.keys.count))
            // Sorted so that equal inventories encode alike.
            for (handle, stamp) in inventory.keys.sorted(by: { $0.key < $1.key }) {
                w.write(handle)
                Self.write(stamp, into: &w)
            }
            w.write(UInt32(inventory.users.count))
            for (name, stamp) in inventory.users.sorted(by: { $0.key < $1.key }) {
                w.write(name)
                Self.write(stamp, into: &w)
            }
        case .records(let records):
            records.encode(into: &w)
        }
        return w.bytes
    }

    private static func write(_ stamp: RecordStamp, into w: inout WireWriter) {
        w.write(stamp.version)
        w.write(stamp.isDeleted)
        w.write(stamp.fingerprint)
    }

    private static func readStamp(_ r: inout WireReader) throws -> RecordStamp {
        RecordStamp(
            version: try r.readUInt64("version"), isDeleted: try r.readBool("deleted flag"),
            fingerprint: try r.readUInt64("fingerprint"))
    }

    /// Decodes the answer to `operation`.
    public static func decode(operation: PeerOperation, payload: [UInt8]) throws -> PeerResponse {
        var r = WireReader(payload)
        let code = HSMReturnCode(rawValue: try r.readUInt32("return code"))
        let detail = try r.readString("detail")
        guard code.isSuccess else {
            try r.finish()
            return PeerResponse(code: code, detail: detail)
        }
        let body: PeerResponseBody
        switch operation {
        case .pushRecords:
            body = .stored
        case .listVersions:
            let counter = try r.readUInt64("handle counter")
            var keys: [KeyHandle: RecordStamp] = [:]
            for _ in 0..<(try r.readCount("key stamps")) {
                let handle = try r.readUInt64("key handle")
                keys[handle] = try readStamp(&r)
            }
            var users: [String: RecordStamp] = [:]
            for _ in 0..<(try r.readCount("user stamps")) {
                let name = try r.readString("user name", maximum: 64)
                users[name] = try readStamp(&r)
            }
            body = .inventory(PeerInventory(handleCounter: counter, keys: keys, users: users))
        case .fetchRecords:
            body = .records(try PeerRecords.decode(from: &r))
        }
        try r.finish()
        return PeerResponse(code: code, detail: detail, body: body)
    }
}

extension WireReader {
    /// A u32 element count that cannot ask for more elements than bytes remain, so a
    /// hostile count never makes the reader allocate or loop for long.
    mutating func readCount(_ what: String) throws -> Int {
        let count = Int(try readUInt32("\(what) count"))
        guard count <= remaining else { throw WireError.invalidValue("\(what) count \(count) exceeds the message") }
        return count
    }

    mutating func readArray<T>(_ what: String, _ element: (inout WireReader) throws -> T) throws -> [T] {
        let count = try readCount(what)
        var out: [T] = []
        out.reserveCapacity(count)
        for _ in 0..<count { out.append(try element(&self)) }
        return out
    }
}
