// The RSA key type (pkcs11-provider's kmgmt/rsa.c): its public parameters n and e, the
// private ones refused by name, generation inside the HSMs, its text form, and the few
// keymgmt functions that depend on the type. Everything else is KeyManagement.swift.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

enum RSAKeyType: ProviderKeyType {
    static let name: StaticString = "RSA"
    static let algorithmNames: StaticString = "RSA:rsaEncryption:1.2.840.113549.1.1.1"
    static let keyManagementDescription: StaticString = "CloudHSM RSA key management (private keys stay in the HSMs)"
    static let hsmKeyType = KeyType.rsa

    static func publicParameters(of key: EVPKey) throws -> [ParamValue] {
        [.bigNumber("n", try key.bigNumber("n")), .bigNumber("e", try key.bigNumber("e"))]
    }

    static func importedPublicParameters(_ params: ParamReader, selection: Int32) throws -> [ParamValue] {
        guard let n = try params.bigNumber("n"), let e = try params.bigNumber("e") else {
            throw ProviderError(.invalidInput, "an RSA public key import needs both n and e")
        }
        return [.bigNumber("n", n), .bigNumber("e", e)]
    }

    static let publicKeyParameterNames: [StaticString] = ["n", "e"]

    /// What the default provider's RSA keymgmt answers for a private key (rsa_kmgmt.c).
    static let privateParameterNames: [StaticString] = [
        "d", "rsa-factor1", "rsa-factor2", "rsa-factor3", "rsa-factor4", "rsa-factor5", "rsa-factor6",
        "rsa-factor7", "rsa-factor8", "rsa-factor9", "rsa-factor10", "rsa-exponent1", "rsa-exponent2",
        "rsa-exponent3", "rsa-exponent4", "rsa-exponent5", "rsa-exponent6", "rsa-exponent7", "rsa-exponent8",
        "rsa-exponent9", "rsa-exponent10", "rsa-coefficient1", "rsa-coefficient2", "rsa-coefficient3",
        "rsa-coefficient4", "rsa-coefficient5", "rsa-coefficient6", "rsa-coefficient7", "rsa-coefficient8",
        "rsa-coefficient9",
    ]

    static func answerParameters(_ writer: ParamWriter, for key: ProviderKey) throws {
        // Never `mandatory-digest`: that restricts RSA-PSS keys only.
        try writer.set("default-digest", staticString: "SHA256")
    }

    static func describePublicKey(_ key: ProviderKey) -> String {
        let exponent = key.bigNumber("e").reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return "Modulus:" + hexBlock(key.bigNumber("n"))
            + "Exponent: \(exponent) (0x\(String(exponent, radix: 16)))\n"
    }

    static func makeGeneration() -> any KeyGeneration { RSAKeyGeneration() }

    static let signatureScheme: any SignatureScheme.Type = RSASignatureScheme.self

    static let keyManagement: UnsafePointer<OSSL_DISPATCH> = {
        var table = KeyManagement.sharedTable
        table.add(KeyManagementSlot.new, rsaNew)
        table.add(KeyManagementSlot.importTypes, rsaImportExportTypes)
        table.add(KeyManagementSlot.exportTypes, rsaImportExportTypes)
        table.add(KeyManagementSlot.gettableParams, rsaGettableParams)
        table.add(KeyManagementSlot.queryOperationName, rsaQueryOperationName)
        table.add(KeyManagementSlot.generationInit, rsaGenerationInit)
        table.add(KeyManagementSlot.generationSettableParams, rsaGenerationSettableParams)
        return table.finished()
    }()
}

/// RSA key generation in the HSMs: two primes, 2048, 3072 or 4096 bits, an odd public
/// exponent from 3 to 2^32-1; anything else is refused when it is set, by name.
final class RSAKeyGeneration: KeyGeneration {
    static let sizes = [2048, 3072, 4096]

    private(set) var bits = 2048
    private(set) var publicExponent = RSAPublicExponent.default

    func apply(_ params: ParamReader) throws {
        if let bits = try params.unsigned("bits") {
            guard let size = Int(exactly: bits), Self.sizes.contains(size) else {
                throw ProviderError(.unsupported, "the HSMs make RSA keys of 2048, 3072 or 4096 bits, not \(bits)")
            }
            self.bits = size
        }
        if let primes = try params.unsigned("primes"), primes != 2 {
            throw ProviderError(.unsupported, "the HSMs make two-prime RSA keys only, not \(primes)-prime ones")
        }
        if let e = try params.bigNumber("e") {
            let digits = e.drop(while: { $0 == 0 })
            let exponent = digits.count <= 8 ? digits.reduce(0) { $0 << 8 | UInt64($1) } : nil
            guard let exponent, RSAPublicExponent.isAllowed(exponent) else {
                let shown = exponent.map { "\($0)" } ?? "a number of \(digits.count) bytes"
                throw ProviderError(
                    .unsupported,
                    "the HSMs make RSA keys with a public exponent that is \(RSAPublicExponent.allowedDescription), "
                        + "not \(shown)")
            }
            publicExponent = exponent
        }
    }

    func generate(with keys: KeyService) throws -> KeyReference {
        try keys.generateKeyPair(
            .generateRSAKeyPair(
                modulusBits: UInt32(bits), publicExponent: publicExponent, label: "openssl-genrsa", isSession: false,
                isExtractable: false),
            label: "openssl-genrsa", what: "an RSA key of \(bits) bits")
    }
}

// MARK: - The type's own keymgmt functions

private func rsaNew(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    KeyManagement.newKey(RSAKeyType.self)
}

private let rsaPublicKeyTypes = paramTable([("n", OSSL_PARAM_UNSIGNED_INTEGER), ("e", OSSL_PARAM_UNSIGNED_INTEGER)])

/// n and e, whatever the selection: the private parameters are never imported or exported.
private func rsaImportExportTypes(_ selection: Int32) -> UnsafePointer<OSSL_PARAM>? {
    selection & Selection.keyPair != 0 ? rsaPublicKeyTypes : nil
}

/// As the default provider lists them, private parameters included: asking for those
/// with an HSM key is refused by name rather than left unanswered.
private let rsaGettable = paramTable(
    [
        ("bits", OSSL_PARAM_INTEGER), ("security-bits", OSSL_PARAM_INTEGER), ("max-size", OSSL_PARAM_INTEGER),
        ("default-digest", OSSL_PARAM_UTF8_STRING), ("n", OSSL_PARAM_UNSIGNED_INTEGER),
        ("e", OSSL_PARAM_UNSIGNED_INTEGER),
    ] + RSAKeyType.privateParameterNames.map { ($0, OSSL_PARAM_UNSIGNED_INTEGER) })

private func rsaGettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    rsaGettable
}

/// Signature and asymmetric cipher alike go to the "RSA" implementations.
private func rsaQueryOperationName(_ operation: Int32) -> UnsafePointer<CChar>? {
    cString(RSAKeyType.name)
}

private func rsaGenerationInit(
    _ provider: UnsafeMutableRawPointer?, _ selection: Int32, _ params: UnsafePointer<OSSL_PARAM>?
) -> UnsafeMutableRawPointer? {
    KeyManagement.generationInit(RSAKeyType.self, selection: selection, params: params)
}

/// `bits` and `primes` must be listed, or genrsa fails with "Error setting RSA length".
private let rsaGenerationSettable = paramTable([
    ("bits", OSSL_PARAM_UNSIGNED_INTEGER), ("primes", OSSL_PARAM_UNSIGNED_INTEGER),
    ("e", OSSL_PARAM_UNSIGNED_INTEGER),
])

private func rsaGenerationSettableParams(_ context: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    rsaGenerationSettable
}

/// OpenSSL's text layout for a big number: colon-separated bytes, fifteen per line, a
/// leading zero byte when the top bit is set.
func hexBlock(_ bytes: [UInt8]) -> String {
    let padded = (bytes.first ?? 0) & 0x80 != 0 ? [0] + bytes : bytes
    var text = ""
    for (index, byte) in padded.enumerated() {
        if index % 15 == 0 { text += "\n    " }
        text += (byte < 16 ? "0" : "") + String(byte, radix: 16)
        if index != padded.count - 1 { text += ":" }
    }
    return text + "\n"
}
