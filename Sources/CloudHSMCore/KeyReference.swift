// The fake PEM: a file that names a private key inside the cluster by handle and carries
// its public key, never the private key. Its own PEM label keeps the default provider
// from ever decoding it as a software key (DESIGN.md, hard rule 2).

/// `CloudHSMKeyReference ::= SEQUENCE { version INTEGER (1), clusterId UTF8String,
/// handle INTEGER, publicKey SubjectPublicKeyInfo, label UTF8String OPTIONAL }`
public struct KeyReference: Equatable, Sendable {
    public static let pemLabel = "CLOUDHSM KEY REFERENCE"
    public static let version: UInt64 = 1

    public var clusterID: String
    public var handle: KeyHandle
    /// DER SubjectPublicKeyInfo of the key's public half.
    public var publicKeyInfo: [UInt8]
    public var label: String?

    public init(clusterID: String, handle: KeyHandle, publicKeyInfo: [UInt8], label: String? = nil) {
        self.clusterID = clusterID
        self.handle = handle
        self.publicKeyInfo = publicKeyInfo
        self.label = label
    }

    public func derEncoded() -> [UInt8] {
        var parts = [DER.integer(Self.version), DER.utf8String(clusterID), DER.integer(handle), publicKeyInfo]
        if let label { parts.append(DER.utf8String(label)) }
        return DER.sequence(parts)
    }

    public func pemEncoded() -> String {
        let base64 = Base64.encode(derEncoded())
        var lines: [Substring] = []
        var rest = Substring(base64)
        while !rest.isEmpty {
            lines.append(rest.prefix(64))
            rest = rest.dropFirst(64)
        }
        return "-----BEGIN \(Self.pemLabel)-----\n" + lines.joined(separator: "\n")
            + "\n-----END \(Self.pemLabel)-----\n"
    }

    public init(der: [UInt8]) throws {
        do {
            var outer = DERReader(der)
            var fields = try outer.readSequence("key reference")
            guard outer.isAtEnd else { throw DERError(reason: "bytes after the key reference") }
            let version = try fields.readUnsignedInteger("version")
            guard version == Self.version else {
                throw DERError(reason: "unsupported key reference version \(version)")
            }
            clusterID = try fields.readUTF8String("cluster id")
            handle = try fields.readUnsignedInteger("key handle")
            publicKeyInfo = try fields.readRawSequence("public key")
            label = fields.isAtEnd ? nil : try fields.readUTF8String("label")
            guard fields.isAtEnd else { throw DERError(reason: "unexpected fields after the label") }
        } catch let error as DERError {
            throw KeyReferenceError.malformed(error.reason)
        }
    }

    /// Finds the key reference block in PEM text, which may hold other blocks before it
    /// (a certificate and key in one file, as HAProxy keeps them).
    public init(pem text: String) throws {
        let bytes = Array(text.utf8)
        switch Self.scan(bytes) {
        case .found(let block): try self.init(pemBlock: bytes[block])
        case .unterminated: throw KeyReferenceError.malformed("the PEM block has no END line")
        case .absent: throw KeyReferenceError.notAKeyReference
        }
    }

    /// True when the text holds a key reference block, whatever else it holds.
    public static func isPresent(in text: String) -> Bool {
        if case .absent = scan(Array(text.utf8)) { return false }
        return true
    }
}

public enum KeyReferenceError: Error, Equatable, Sendable, CustomStringConvertible {
    case notAKeyReference
    case malformed(String)

    public var description: String {
        switch self {
        case .notAKeyReference: return "no \(KeyReference.pemLabel) block found"
        case .malformed(let reason): return "malformed CloudHSM key reference: \(reason)"
        }
    }
}
