// A private key of either kind the nodes hold, read from what users and wraps carry:
// key files (PEM or DER; PKCS#1, SEC1 or PKCS#8) for key_mgmt_util's importPrivateKey,
// and the DER inside a wrap for the node's unwrap.

import COpenSSL
import CloudHSMCore

/// An RSA or EC private key.
public enum PrivateKey {
    case rsa(RSAPrivateKey)
    case ec(ECPrivateKey)

    /// Parses DER: PKCS#8 PrivateKeyInfo, PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey.
    ///
    /// - Throws: `CryptoError.invalidKeyData` for anything else, other key types and
    ///   trailing bytes included; `CryptoError.invalidArgument` naming the curve of an EC
    ///   key on a curve the nodes do not support.
    public init(der: [UInt8], context: CryptoContext) throws {
        guard !der.isEmpty else { throw CryptoError.invalidKeyData("no key data") }
        let parsed = decodeWhole(der) { d2i_AutoPrivateKey_ex(nil, $0, $1, context.pointer, nil) }
        guard let parsed else {
            clearOpenSSLErrors()
            throw CryptoError.invalidKeyData("not a DER-encoded private key (PKCS#8, PKCS#1 or SEC1)")
        }
        let key = OwnedPKey(taking: parsed)
        if key.isA("EC") {
            self = .ec(try ECPrivateKey(parsed: key, context: context))
        } else if key.isA("RSA") {
            // RSAPrivateKey keeps its own parsing; an import pays for a second parse.
            self = .rsa(try RSAPrivateKey(der: der, context: context))
        } else {
            throw CryptoError.invalidKeyData("the key is neither an RSA nor an EC key")
        }
    }

    /// Reads a key file: PEM "PRIVATE KEY", "RSA PRIVATE KEY" or "EC PRIVATE KEY" (an
    /// "EC PARAMETERS" block before it, as `openssl ecparam -genkey` writes, is skipped),
    /// or the same in DER.
    ///
    /// - Throws: `CryptoError.invalidKeyData` naming what the file is instead.
    public static func parse(fileContents: [UInt8], context: CryptoContext) throws -> PrivateKey {
        let marker = Array("-----BEGIN ".utf8)
        let isPEM =
            fileContents.count >= marker.count
            && (0...(fileContents.count - marker.count)).contains {
                fileContents[$0..<$0 + marker.count].elementsEqual(marker)
            }
        guard isPEM else { return try PrivateKey(der: fileContents, context: context) }
        let blocks = try PEMBlock.readAll(fileContents)
        for block in blocks {
            switch block.label {
            case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
                guard !block.hasHeaders else {
                    throw CryptoError.invalidKeyData("encrypted PEM keys are not supported; decrypt the key first")
                }
                return try PrivateKey(der: block.der, context: context)
            case "ENCRYPTED PRIVATE KEY":
                throw CryptoError.invalidKeyData("encrypted PKCS#8 keys are not supported; decrypt the key first")
            case KeyReference.pemLabel:
                throw CryptoError.invalidKeyData("this is a CloudHSM key reference (fake PEM), not a private key")
            case let label where label.hasSuffix("PRIVATE KEY"):
                throw CryptoError.invalidKeyData("PEM block \"\(label)\" is not an RSA or EC private key")
            default:
                continue
            }
        }
        let labels = blocks.map { "\"\($0.label)\"" }.joined(separator: ", ")
        throw CryptoError.invalidKeyData(
            blocks.isEmpty ? "no PEM block found" : "no private key in the PEM file (found \(labels))")
    }

    /// The key as DER PKCS#8 PrivateKeyInfo (plaintext: only for wrapping or sealing).
    public func pkcs8DER() throws -> [UInt8] {
        switch self {
        case .rsa(let key): return try key.pkcs8DER()
        case .ec(let key): return try key.pkcs8DER()
        }
    }

    public var publicKeyInfo: [UInt8] {
        switch self {
        case .rsa(let key): return key.publicKeyInfo
        case .ec(let key): return key.publicKeyInfo
        }
    }

    public var keyType: KeyType {
        switch self {
        case .rsa: return .rsa
        case .ec: return .ec
        }
    }

    /// The size the nodes report: modulus bits, or the curve's field bits.
    public var sizeInBits: Int {
        switch self {
        case .rsa(let key): return key.modulusBits
        case .ec(let key): return key.curve.fieldBits
        }
    }
}
