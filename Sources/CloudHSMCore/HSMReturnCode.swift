// The HSM return codes that travel on the wire and that the tools print, in the
// style of AWS CloudHSM's key_mgmt_util ("0xa8 : HSM Error: ...").

/// A typed HSM return code. Unknown values from a newer node are kept, not rejected.
public struct HSMReturnCode: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let success = HSMReturnCode(rawValue: 0x00)
    public static let invalidRequest = HSMReturnCode(rawValue: 0x10)
    public static let invalidArgument = HSMReturnCode(rawValue: 0x11)
    public static let unsupportedVersion = HSMReturnCode(rawValue: 0x12)
    public static let notLoggedIn = HSMReturnCode(rawValue: 0x20)
    public static let alreadyLoggedIn = HSMReturnCode(rawValue: 0x21)
    public static let loginFailed = HSMReturnCode(rawValue: 0x22)
    public static let userLocked = HSMReturnCode(rawValue: 0x23)
    public static let permissionDenied = HSMReturnCode(rawValue: 0x24)
    public static let userExists = HSMReturnCode(rawValue: 0x25)
    public static let userNotFound = HSMReturnCode(rawValue: 0x26)
    public static let userOwnsKeys = HSMReturnCode(rawValue: 0x27)
    public static let userLoggedIn = HSMReturnCode(rawValue: 0x28)
    public static let invalidHandle = HSMReturnCode(rawValue: 0xa8)
    public static let invalidKeyType = HSMReturnCode(rawValue: 0xa9)
    public static let keyNotExtractable = HSMReturnCode(rawValue: 0xaa)
    public static let unwrapFailed = HSMReturnCode(rawValue: 0xb0)
    public static let invalidKeyData = HSMReturnCode(rawValue: 0xb1)
    public static let decryptFailed = HSMReturnCode(rawValue: 0xb2)
    public static let throttled = HSMReturnCode(rawValue: 0xbb)
    public static let keyNotReplicated = HSMReturnCode(rawValue: 0xbc)
    public static let insufficientNodes = HSMReturnCode(rawValue: 0xbd)
    public static let keyAccessDenied = HSMReturnCode(rawValue: 0xc6)
    public static let internalError = HSMReturnCode(rawValue: 0xff)
    // Raised by the client, never sent by a node: the node could not be asked.
    public static let nodeUnreachable = HSMReturnCode(rawValue: 0xe0)
    public static let tlsFailure = HSMReturnCode(rawValue: 0xe1)
    public static let timedOut = HSMReturnCode(rawValue: 0xe2)
    public static let connectionLost = HSMReturnCode(rawValue: 0xe3)
    public static let noNodeAvailable = HSMReturnCode(rawValue: 0xe4)
    /// The node answered for another cluster than the configuration's `cluster_id`.
    public static let clusterMismatch = HSMReturnCode(rawValue: 0xe5)

    public var isSuccess: Bool { self == .success }

    /// The meaning printed after the code, as key_mgmt_util does.
    public var meaning: String {
        switch self {
        case .success: return "SUCCESS"
        case .invalidRequest: return "Invalid request (malformed or unknown message)"
        case .invalidArgument: return "Invalid argument"
        case .unsupportedVersion: return "Unsupported protocol version"
        case .notLoggedIn: return "User is not logged in"
        case .alreadyLoggedIn: return "A user is already logged in on this session"
        case .loginFailed: return "Login failed: wrong user name or password"
        case .userLocked: return "User is locked out after too many failed logins"
        case .permissionDenied: return "Operation not permitted for this user role"
        case .userExists: return "User already exists"
        case .userNotFound: return "User not found"
        case .userOwnsKeys: return "User owns keys and cannot be deleted"
        case .userLoggedIn: return "User is logged in and cannot be deleted"
        case .invalidHandle: return "Invalid key handle"
        case .invalidKeyType: return "Key class or type does not allow this operation"
        case .keyNotExtractable: return "Key is not extractable"
        case .unwrapFailed: return "Unwrap failed: the wrapped data does not match the wrapping key"
        case .invalidKeyData: return "Key data is not a valid RSA or EC private key"
        case .decryptFailed: return "Decryption failed"
        case .throttled: return "HSM is busy (throttled): its request queue or connection slots are full"
        case .keyNotReplicated: return "Key is not yet replicated to this HSM"
        case .insufficientNodes: return "Key could not be stored on enough HSMs"
        case .keyAccessDenied: return "Key access denied: the key belongs to another user"
        case .internalError: return "Internal HSM error"
        case .nodeUnreachable: return "HSM node unreachable (connection refused or no route)"
        // Not only certificates fail a handshake (an alert, a port that does not speak
        // TLS): the detail says which, and only an untrusted certificate names the anchor.
        case .tlsFailure: return "TLS handshake with the HSM failed"
        case .timedOut: return "HSM did not answer in time"
        case .connectionLost: return "Connection to the HSM was lost"
        case .noNodeAvailable: return "No HSM in the cluster could serve the request"
        case .clusterMismatch: return "HSM belongs to another cluster than the configured cluster_id"
        default: return "Unknown HSM return code"
        }
    }

    /// `0x00 : HSM Return: SUCCESS` or `0xa8 : HSM Error: Invalid key handle`.
    public var description: String {
        let hex = "0x" + (rawValue < 0x10 ? "0" : "") + String(rawValue, radix: 16)
        return isSuccess ? "\(hex) : HSM Return: SUCCESS" : "\(hex) : HSM Error: \(meaning)"
    }

    /// The eight-digit form of the "Cluster Error Status" lines.
    public var paddedHex: String {
        let digits = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

extension HSMReturnCode: CustomStringConvertible {}

/// An HSM operation that failed with a return code and, optionally, the node's detail.
public struct HSMError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: HSMReturnCode
    public let detail: String

    public init(_ code: HSMReturnCode, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    public var description: String {
        detail.isEmpty ? code.description : "\(code.description) (\(detail))"
    }
}
