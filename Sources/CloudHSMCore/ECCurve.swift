// Elliptic curves, numbered as AWS key_mgmt_util's genECCKeyPair numbers them (`-i`).
// The nodes make and use keys on P-256, P-384 and P-521 only (what TLS certificates and
// AWS's SDK 5 provider use); every other id AWS documents has a name here, so a request
// for it is refused by that name rather than as an unknown number.

/// An AWS CloudHSM curve id. Unknown ids are kept, not rejected, so the wire carries
/// any value and the node answers a clear "not supported" for it.
public struct ECCurve: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let p256 = ECCurve(rawValue: 2)
    public static let p384 = ECCurve(rawValue: 14)
    public static let p521 = ECCurve(rawValue: 15)

    /// The curves the nodes generate, import and sign with.
    public static let supported: [ECCurve] = [.p256, .p384, .p521]
    public static let supportedDescription = "2 (P-256), 14 (P-384) or 15 (P-521)"

    public var isSupported: Bool { Self.supported.contains(self) }

    /// OpenSSL's short name for every curve id AWS documents (1...16); nil for others.
    public var openSSLName: String? {
        switch rawValue {
        case 1: return "prime192v1"
        case 2: return "prime256v1"
        case 3: return "sect163k1"
        case 4: return "sect163r2"
        case 5: return "sect233k1"
        case 6: return "sect233r1"
        case 7: return "sect283k1"
        case 8: return "sect283r1"
        case 9: return "sect409k1"
        case 10: return "sect409r1"
        case 11: return "sect571k1"
        case 12: return "sect571r1"
        case 13: return "secp224r1"
        case 14: return "secp384r1"
        case 15: return "secp521r1"
        case 16: return "secp256k1"
        default: return nil
        }
    }

    /// "P-256" for the supported curves: the name OpenSSL's `group` parameter takes too.
    public var nistName: String? {
        switch self {
        case .p256: return "P-256"
        case .p384: return "P-384"
        case .p521: return "P-521"
        default: return nil
        }
    }

    /// Bits of the field: the key size the nodes report (`sizeInBits`); 0 when unsupported.
    public var fieldBits: Int {
        switch self {
        case .p256: return 256
        case .p384: return 384
        case .p521: return 521
        default: return 0
        }
    }

    /// Bytes of each of r and s in a signature, and of each coordinate of a point.
    public var coordinateLength: Int { (fieldBits + 7) / 8 }

    /// The curve's OBJECT IDENTIFIER, DER-encoded (tag and length included): the
    /// `namedCurve` of the key's SubjectPublicKeyInfo and of PKCS#11's EC_PARAMS.
    public var oidDER: [UInt8]? {
        switch self {
        case .p256: return [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        case .p384: return [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]
        case .p521: return [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23]
        default: return nil
        }
    }

    /// "P-256 (prime256v1)", or for a curve the nodes do not support "secp256k1 (curve
    /// id 16)" and "curve id 99".
    public var name: String {
        if let nistName, let openSSLName { return "\(nistName) (\(openSSLName))" }
        if let openSSLName { return "\(openSSLName) (curve id \(rawValue))" }
        return "curve id \(rawValue)"
    }

    /// Why a key cannot be made on this curve; nil when it can.
    public var problem: String? {
        guard !isSupported else { return nil }
        return "curve not supported: \(name); the HSMs support \(Self.supportedDescription)"
    }

    /// A supported curve by any of its usual names: "P-256", "prime256v1", "secp256r1",
    /// "P-384", "secp384r1", "P-521", "secp521r1" (any letter case).
    public init?(name: String) {
        switch name.lowercased() {
        case "p-256", "p256", "prime256v1", "secp256r1": self = .p256
        case "p-384", "p384", "secp384r1": self = .p384
        case "p-521", "p521", "secp521r1": self = .p521
        default: return nil
        }
    }

    /// The supported curve of an EC SubjectPublicKeyInfo with a named curve; nil for
    /// anything else (another algorithm, explicit parameters, another curve).
    public init?(publicKeyInfo: [UInt8]) {
        // SEQUENCE { SEQUENCE { OID id-ecPublicKey, OID namedCurve }, BIT STRING }
        let ecPublicKey: [UInt8] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]
        var outer = DERReader(publicKeyInfo)
        guard var info = try? outer.readSequence("public key info"), outer.isAtEnd,
            var algorithm = try? info.readSequence("algorithm"),
            let identifier = try? algorithm.readElement("algorithm identifier"), identifier.encoded == ecPublicKey,
            let parameters = try? algorithm.readElement("curve"), algorithm.isAtEnd
        else { return nil }
        guard let curve = Self.supported.first(where: { $0.oidDER == parameters.encoded }) else { return nil }
        self = curve
    }
}

extension ECCurve: CustomStringConvertible {
    public var description: String { name }
}
