// getAttribute's file format: `OBJ_ATTR_NAME` then `0x<value>` per attribute, as AWS's
// key_mgmt_util writes it, built from the attributes a node reports.

import CloudHSMCore
import OpenSSLKit

enum KeyAttributeID: UInt64, CaseIterable {
    case keyClass = 0
    case token = 1
    case isPrivate = 2
    case label = 3
    case keyType = 256
    case sensitive = 259
    case modulus = 288
    case modulusBits = 289
    case publicExponent = 290
    case valueLength = 353
    case extractable = 354
    case ecParams = 384
    case ecPoint = 385

    var name: String {
        switch self {
        case .keyClass: return "OBJ_ATTR_CLASS"
        case .token: return "OBJ_ATTR_TOKEN"
        case .isPrivate: return "OBJ_ATTR_PRIVATE"
        case .label: return "OBJ_ATTR_LABEL"
        case .keyType: return "OBJ_ATTR_KEY_TYPE"
        case .sensitive: return "OBJ_ATTR_SENSITIVE"
        case .modulus: return "OBJ_ATTR_MODULUS"
        case .modulusBits: return "OBJ_ATTR_MODULUS_BITS"
        case .publicExponent: return "OBJ_ATTR_PUBLIC_EXPONENT"
        case .valueLength: return "OBJ_ATTR_VALUE_LEN"
        case .extractable: return "OBJ_ATTR_EXTRACTABLE"
        case .ecParams: return "OBJ_ATTR_EC_PARAMS"
        case .ecPoint: return "OBJ_ATTR_EC_POINT"
        }
    }
}

struct AttributeDump {
    struct Entry {
        let id: KeyAttributeID
        /// The value line as written: `0x...`, or the label as text.
        let text: String
        /// The value's size in bytes, for the "got attributes of size" line.
        let size: Int
    }

    let entries: [Entry]

    /// The attributes that apply to the key, in attribute-id order.
    init(_ attributes: KeyAttributes, context: CryptoContext) {
        var entries: [Entry] = []
        func flag(_ id: KeyAttributeID, _ value: Bool) {
            entries.append(Entry(id: id, text: value ? "0x01" : "0x00", size: 1))
        }
        func number(_ id: KeyAttributeID, _ value: UInt64, digits: Int) {
            entries.append(Entry(id: id, text: "0x" + hex(value, digits: digits), size: 4))
        }
        number(.keyClass, UInt64(attributes.keyClass.rawValue), digits: 2)
        flag(.token, attributes.isToken)
        // Every object in an HSM needs a login to use: always private.
        flag(.isPrivate, true)
        entries.append(Entry(id: .label, text: attributes.label, size: attributes.label.utf8.count))
        number(.keyType, UInt64(attributes.keyType.rawValue), digits: 2)
        flag(.sensitive, attributes.keyClass != .publicKey)
        if attributes.keyType == .rsa, !attributes.publicKeyInfo.isEmpty,
            let publicKey = try? RSAPublicKey(publicKeyInfo: attributes.publicKeyInfo, context: context)
        {
            let modulus = publicKey.modulus
            entries.append(Entry(id: .modulus, text: "0x" + modulus.hexString, size: modulus.count))
            number(.modulusBits, UInt64(attributes.sizeInBits), digits: 8)
            let exponent = publicKey.publicExponent
            entries.append(Entry(id: .publicExponent, text: "0x" + exponent.hexString, size: exponent.count))
        }
        if attributes.keyClass == .secretKey {
            number(.valueLength, UInt64(attributes.sizeInBits / 8), digits: 8)
        }
        flag(.extractable, attributes.isExtractable)
        // As PKCS#11 has them: the curve's OID (DER) on both halves, the public point (DER
        // OCTET STRING of the X9.62 point) on the public key object.
        if attributes.keyType == .ec, let curve = ECCurve(publicKeyInfo: attributes.publicKeyInfo),
            let oid = curve.oidDER
        {
            entries.append(Entry(id: .ecParams, text: "0x" + oid.hexString, size: oid.count))
            if attributes.keyClass == .publicKey,
                let point = try? ECPublicKey(publicKeyInfo: attributes.publicKeyInfo, context: context).encodedPoint,
                !point.isEmpty
            {
                let octets = [0x04] + derLength(point.count) + point
                entries.append(Entry(id: .ecPoint, text: "0x" + octets.hexString, size: octets.count))
            }
        }
        self.entries = entries
    }
}

/// A DER length: short form below 128, else 0x81/0x82 and the bytes.
func derLength(_ length: Int) -> [UInt8] {
    if length < 0x80 { return [UInt8(length)] }
    if length <= 0xff { return [0x81, UInt8(length)] }
    return [0x82, UInt8(length >> 8), UInt8(length & 0xff)]
}

func hex(_ value: UInt64, digits: Int) -> String {
    let text = String(value, radix: 16)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}

extension Array where Element == UInt8 {
    var hexString: String { map { hex(UInt64($0), digits: 2) }.joined() }
}
