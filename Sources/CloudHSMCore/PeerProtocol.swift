// The node-to-node (replication) messages. They travel in ordinary frames with operation
// codes 0x40 and up, only on mutual-TLS connections between nodes; the node seals every
// payload under the cluster key before it goes out (see HSMNode's PeerEnvelope), so these
// encodings are what is inside the seal. Kept apart from HSMRequest so clients and tools
// never see peer operations.

public enum PeerOperation: UInt8, Sendable, CaseIterable {
    /// Every key's and user's version, the failed-login logs, and the sender's handle
    /// counter.
    case listVersions = 0x40
    /// The full records of some keys and users.
    case fetchRecords = 0x41
    /// Records (and failed-login logs) to store if newer than what the receiver holds.
    case pushRecords = 0x42
    /// How many sessions a user has open on the receiver and how many keys it owns there:
    /// asked before a user is deleted.
    case userActivity = 0x43
}

/// A token key as it crosses between nodes: its material in the clear, which is why the
/// whole message is sealed under the cluster key.
public struct PeerKeyRecord: Equatable, Sendable {
    public var handle: KeyHandle
    public var keyClass: KeyClass
    public var keyType: KeyType
    public var label: String
    public var owner: UserID
    public var isExtractable: Bool
    public var sizeInBits: UInt32
    public var publicKeyInfo: [UInt8]
    /// Raw secret bytes or PKCS#8; empty for public keys and tombstones.
    public var material: [UInt8]
    public var version: UInt64
    public var isDeleted: Bool

    public init(
        handle: KeyHandle, keyClass: KeyClass, keyType: KeyType, label: String, owner: UserID, isExtractable: Bool,
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

/// A user as it crosses between nodes: the salted hash, never a password. Identified by
/// its id; the name is unique among live users only.
public struct PeerUserRecord: Equatable, Sendable {
    public var id: UserID
    public var name: String
    public var role: UserRole
    public var salt: [UInt8]
    public var passwordHash: [UInt8]
    public var iterations: UInt32
    public var version: UInt64
    public var isDeleted: Bool

    public init(
        id: UserID, name: String, role: UserRole, salt: [UInt8], passwordHash: [UInt8], iterations: UInt32,
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

/// One failed login as the node that counted it recorded it.
public struct LoginFailure: Hashable, Sendable {
    /// The node that counted it.
    public var node: UInt8
    /// That node's running number for this user's failures, from 1.
    public var sequence: UInt64
    /// A short digest of the wrong password's hash: the same wrong password tried on
    /// several nodes (the tools log in on every node at once) counts once.
    public var tag: UInt64

    public init(node: UInt8, sequence: UInt64, tag: UInt64) {
        self.node = node
        self.sequence = sequence
        self.tag = tag
    }
}

/// Per node, how far its count of one user's failures goes and how much of it is forgiven.
public struct LoginMark: Hashable, Sendable {
    public var node: UInt8
    /// The highest sequence number of that node's failures known here.
    public var counted: UInt64
    /// That node's failures up to this sequence number are forgiven (a successful login or
    /// a new password set by a crypto officer).
    public var forgiven: UInt64

    public init(node: UInt8, counted: UInt64, forgiven: UInt64) {
        self.node = node
        self.counted = counted
        self.forgiven = forgiven
    }
}

/// One user's failed logins, as a state that merges without conflicts: marks merge by
/// maximum per node, failures by union, and a failure at or below its node's forgiven
/// mark no longer counts. The user's count is the number of distinct tags that still do.
public struct LoginFailureLog: Equatable, Sendable {
    public var userID: UserID
    public var marks: [LoginMark]
    /// The failures not yet forgiven.
    public var failures: [LoginFailure]

    public init(userID: UserID, marks: [LoginMark] = [], failures: [LoginFailure] = []) {
        self.userID = userID
        self.marks = marks
        self.failures = failures
    }

    /// Distinct wrong passwords not yet forgiven.
    public var count: Int {
        let forgiven = Dictionary(marks.map { ($0.node, $0.forgiven) }, uniquingKeysWith: max)
        return Set(failures.filter { $0.sequence > forgiven[$0.node, default: 0] }.map(\.tag)).count
    }

    func encode(into w: inout WireWriter) {
        w.write(userID)
        w.write(UInt32(marks.count))
        for mark in marks {
            w.write(mark.node)
            w.write(mark.counted)
            w.write(mark.forgiven)
        }
        w.write(UInt32(failures.count))
        for failure in failures {
            w.write(failure.node)
            w.write(failure.sequence)
            w.write(failure.tag)
        }
    }

    static func decode(from r: inout WireReader) throws -> LoginFailureLog {
        let userID = try r.readUInt32("user id")
        let marks = try r.readArray("login marks") { r in
            LoginMark(
                node: try r.readNodeID(), counted: try r.readUInt64("failure count"),
                forgiven: try r.readUInt64("forgiven mark"))
        }
        let failures = try r.readArray("login failures") { r in
            LoginFailure(node: try r.readNodeID(), sequence: try r.readUInt64("sequence"), tag: try r.readUInt64("tag"))
        }
        return LoginFailureLog(userID: userID, marks: marks, failures: failures)
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
    public var users: [UserID: RecordStamp]
    /// Every user's failed-login log that has ever counted something; small, so it travels
    /// whole and the receiver merges it without a fetch.
    public var loginFailures: [LoginFailureLog]

    public init(
        handleCounter: UInt64, keys: [KeyHandle: RecordStamp], users: [UserID: RecordStamp],
        loginFailures: [LoginFailureLog] = []
    ) {
        self.handleCounter = handleCounter
        self.keys = keys
        self.users = users
        self.loginFailures = loginFailures
    }
}

/// What a node says about one user before it is deleted.
public struct UserActivity: Equatable, Sendable {
    /// Connections logged in as the user on that node.
    public var sessions: UInt32
    /// Token keys the user owns on that node.
    public var ownedKeys: UInt32

    public init(sessions: UInt32, ownedKeys: UInt32) {
        self.sessions = sessions
        self.ownedKeys = ownedKeys
    }
}

public enum PeerRequest: Equatable, Sendable {
    case listVersions
    case fetchRecords(keys: [KeyHandle], users: [UserID])
    case pushRecords(PeerRecords)
    case userActivity(UserID)

    public var operation: PeerOperation {
        switch self {
        case .listVersions: return .listVersions
        case .fetchRecords: return .fetchRecords
        case .pushRecords: return .pushRecords
        case .userActivity: return .userActivity
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
        case .pushRecords(let records):
            records.encode(into: &w)
        case .userActivity(let id):
            w.write(id)
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
            let users = try r.readArray("user ids") { try $0.readUInt32("user id") }
            request = .fetchRecords(keys: keys, users: users)
        case .pushRecords:
            request = .pushRecords(try PeerRecords.decode(from: &r))
        case .userActivity:
            request = .userActivity(try r.readUInt32("user id"))
        }
        try r.finish()
        return request
    }
}

/// Keys, users and failed-login logs together, as `fetchRecords` answers and
/// `pushRecords` sends.
public struct PeerRecords: Equatable, Sendable {
    public var keys: [PeerKeyRecord]
    public var users: [PeerUserRecord]
    public var loginFailures: [LoginFailureLog]

    public init(keys: [PeerKeyRecord] = [], users: [PeerUserRecord] = [], loginFailures: [LoginFailureLog] = []) {
        self.keys = keys
        self.users = users
        self.loginFailures = loginFailures
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
        w.write(UInt32(loginFailures.count))
        for log in loginFailures { log.encode(into: &w) }
    }

    static func decode(from r: inout WireReader) throws -> PeerRecords {
        let keys = try r.readArray("key records") { r in
            PeerKeyRecord(
                handle: try r.readUInt64("key handle"), keyClass: try r.readEnum(KeyClass.self, "key class"),
                keyType: try r.readEnum(KeyType.self, "key type"), label: try r.readString("label", maximum: 256),
                owner: try r.readUInt32("owner"), isExtractable: try r.readBool("extractable flag"),
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
        let logs = try r.readArray("login failure logs") { try LoginFailureLog.decode(from: &$0) }
        return PeerRecords(keys: keys, users: users, loginFailures: logs)
    }
}

public enum PeerResponseBody: Equatable, Sendable {
    /// `pushRecords`: the receiver holds every pushed record (or a newer version) on disk.
    case stored
    case inventory(PeerInventory)
    case records(PeerRecords)
    case activity(UserActivity)
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
            for (id, stamp) in inventory.users.sorted(by: { $0.key < $1.key }) {
                w.write(id)
                Self.write(stamp, into: &w)
            }
            w.write(UInt32(inventory.loginFailures.count))
            for log in inventory.loginFailures { log.encode(into: &w) }
        case .records(let records):
            records.encode(into: &w)
        case .activity(let activity):
            w.write(activity.sessions)
            w.write(activity.ownedKeys)
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
            var users: [UserID: RecordStamp] = [:]
            for _ in 0..<(try r.readCount("user stamps")) {
                let id = try r.readUInt32("user id")
                users[id] = try readStamp(&r)
            }
            let logs = try r.readArray("login failure logs") { try LoginFailureLog.decode(from: &$0) }
            body = .inventory(PeerInventory(handleCounter: counter, keys: keys, users: users, loginFailures: logs))
        case .fetchRecords:
            body = .records(try PeerRecords.decode(from: &r))
        case .userActivity:
            body = .activity(
                UserActivity(sessions: try r.readUInt32("session count"), ownedKeys: try r.readUInt32("key count")))
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

    /// A node id, 0...15.
    mutating func readNodeID() throws -> UInt8 {
        let id = try readUInt8("node id")
        guard id <= 15 else { throw WireError.invalidValue("node id \(id) is out of range 0...15") }
        return id
    }
}
