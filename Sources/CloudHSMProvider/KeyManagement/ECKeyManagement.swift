// The EC key type (pkcs11-provider's kmgmt/ec.c): keys on the curves the HSMs hold (P-256,
// P-384, P-521), their group and public point, the private scalar refused by name,
// generation inside the HSMs, domain parameters (templates, `ecparam`, `genpkey
// -genparam`), the text form, and the few keymgmt functions that depend on the type.
// Questions about the public key are answered by the default provider from the key
// file's public key, so every name OpenSSL's own EC keymgmt answers is answered the same.
//
// This keymgmt is not the one OpenSSL picks for EC keys in general: libssl makes each TLS
// handshake's P-256/P-384 key share through whichever EC keymgmt the default property query
// prefers, and those must be made in software. Its row is marked so that provider.cnf's
// query prefers the default provider's EC keymgmt; keys are made in the HSMs when asked
// for (`-propquery provider=cloudhsm`), and fake PEMs reach it through our decoders.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

enum ECKeyType: ProviderKeyType {
    static let name: StaticString = "EC"
    static let algorithmNames: StaticString = "EC:id-ecPublicKey:1.2.840.10045.2.1"
    static let keyManagementDescription: StaticString =
        "CloudHSM EC key management (P-256, P-384, P-521; private keys stay in the HSMs)"
    /// Two marks, both matched by provider.cnf's `?cloudhsm.on_request=no,?cloudhsm.key_exchange=no`:
    /// together they outweigh `?provider=cloudhsm`, so the default provider's EC keymgmt
    /// wins whatever order the providers were loaded in (docs/architecture.md).
    static let keyManagementProperties: StaticString =
        "provider=cloudhsm,cloudhsm.on_request=yes,cloudhsm.key_exchange=yes"
    static let hsmKeyType = KeyType.ec
    static let hasDomainParameters = true

    static func publicParameters(of key: EVPKey) throws -> [ParamValue] {
        [.string("group", try key.string("group")), .octets("pub", try key.octets("pub"))]
    }

    static func domainParameterValues(of key: EVPKey) throws -> [ParamValue] {
        [
            .string("group", try key.string("group")), .string("encoding", try key.string("encoding")),
            .string("point-format", try key.string("point-format")),
        ]
    }

    /// A named curve and a point; explicit curve parameters are refused by name (the
    /// default provider, which holds such keys, then takes the operation).
    static func importedPublicParameters(_ params: ParamReader, selection: Int32) throws -> [ParamValue] {
        let group = try namedGroup(params)
        guard let point = try params.octets("pub") else {
            throw ProviderError(.invalidInput, "an EC public key import needs the public point ('pub')")
        }
        return [.string("group", group), .octets("pub", point)]
    }

    static func importedDomainParameters(_ params: ParamReader) throws -> DomainParameters? {
        try DomainParameters(type: ECKeyType.self, values: [.string("group", try namedGroup(params))])
    }

    private static func namedGroup(_ params: ParamReader) throws -> String {
        if let group = try params.string("group") { return group }
        if params.contains("field-type") || params.contains("p") || params.contains("generator") {
            throw ProviderError(
                .unsupported,
                "EC keys with explicit curve parameters are not held by the CloudHSM provider; it holds keys on "
                    + "named curves")
        }
        throw ProviderError(.invalidInput, "an EC key import needs its curve ('group')")
    }

    static let publicKeyParameterNames: [StaticString] = ["pub", "encoded-pub-key", "qx", "qy"]

    /// What the default provider's EC keymgmt answers for a private key (ec_kmgmt.c).
    static let privateParameterNames: [StaticString] = ["priv"]

    /// Everything else as the default provider answers it for the same public key: the
    /// group and its parameters, the encoded point, the point format, the default digest.
    static func answerParameters(_ writer: ParamWriter, for key: ProviderKey) throws {
        guard let params = writer.params else { return }
        try key.publicKey.getParameters(params)
    }

    static func sizeDescription(_ key: ProviderKey) -> String {
        let curve = ECCurve(publicKeyInfo: key.publicKeyInfo)?.name ?? (try? key.publicKey.string("group")) ?? "?"
        return "\(key.bits) bit, curve \(curve)"
    }

    /// OpenSSL's own text layout for the public half.
    static func describePublicKey(_ key: ProviderKey) -> String {
        var text = "pub:" + hexBlock(key.octets("pub"))
        if let group = try? key.publicKey.string("group") { text += "ASN1 OID: \(group)\n" }
        if let nist = ECCurve(publicKeyInfo: key.publicKeyInfo)?.nistName { text += "NIST CURVE: \(nist)\n" }
        return text
    }

    static func makeGeneration() -> any KeyGeneration { ECKeyGeneration() }

    static let signatureScheme: any SignatureScheme.Type = ECDSASignatureScheme.self

    static let keyManagement: UnsafePointer<OSSL_DISPATCH> = {
        var table = KeyManagement.sharedTable
        table.add(KeyManagementSlot.new, ecNew)
        table.add(KeyManagementSlot.importTypes, ecImportExportTypes)
        table.add(KeyManagementSlot.exportTypes, ecImportExportTypes)
        table.add(KeyManagementSlot.gettableParams, ecGettableParams)
        table.add(KeyManagementSlot.setParams, ecSetParams)
        table.add(KeyManagementSlot.settableParams, ecSettableParams)
        table.add(KeyManagementSlot.queryOperationName, ecQueryOperationName)
        table.add(KeyManagementSlot.generationInit, ecGenerationInit)
        table.add(KeyManagementSlot.generationSettableParams, ecGenerationSettableParams)
        return table.finished()
    }()
}

/// The EC settings that say how a key is written or used rather than which key it is, with
/// the default provider's words (ec_kmgmt.c, ec_backend.c). Keys of the HSMs are on named
/// curves, hand out uncompressed points and do no key exchange: a setting that says so is
/// taken (it changes nothing), one that asks for something else is refused by name, and a
/// word OpenSSL does not know is reported as unknown, as the default provider rejects it.
enum ECSettings {
    static func checkEncoding(_ encoding: String) throws {
        switch encoding.lowercased() {
        case "named_curve": return
        case "explicit":
            throw ProviderError(
                .unsupported,
                "EC parameter encoding 'explicit': keys of the HSMs name their curve (named_curve)")
        default:
            throw ProviderError(
                .invalidInput, "EC parameter encoding '\(encoding)' is unknown (named_curve or explicit)")
        }
    }

    static func checkPointFormat(_ format: String) throws {
        switch format.lowercased() {
        case "uncompressed": return
        case "compressed", "hybrid":
            throw ProviderError(.unsupported, "EC point format '\(format)': the HSMs hand out uncompressed points")
        default:
            throw ProviderError(
                .invalidInput, "EC point format '\(format)' is unknown (uncompressed, compressed or hybrid)")
        }
    }

    /// -1 (the curve's default) and 0 say the same for P-256, P-384 and P-521 (cofactor 1).
    static func checkCofactorFlag(_ mode: Int) throws {
        switch mode {
        case -1, 0: return
        case 1:
            throw ProviderError(
                .unsupported,
                "use-cofactor-flag 1: cofactor ECDH is for key exchange, which HSM keys do not do (and P-256, "
                    + "P-384 and P-521 have cofactor 1)")
        default:
            throw ProviderError(.invalidInput, "use-cofactor-flag \(mode) is invalid (-1, 0 or 1)")
        }
    }

    /// Every check holds for the HSMs' curves, which are named NIST curves.
    static func checkGroupCheck(_ check: String) throws {
        guard ["default", "named", "named-nist"].contains(check.lowercased()) else {
            throw ProviderError(
                .invalidInput, "EC group check type '\(check)' is unknown (default, named or named-nist)")
        }
    }

    static func explicitCurve(_ name: StaticString) -> ProviderError {
        ProviderError(
            .unsupported,
            "EC parameter '\(name)' describes an explicit curve: the HSMs make keys on P-256, P-384 or P-521, named "
                + "by 'group'")
    }

    /// Key parameters set on a key of ours (EVP_PKEY_set_params, `openssl ec -conv_form`):
    /// each as the default provider takes it, as long as the key stays what it is. Names
    /// outside the settable table are passed over, as the default provider passes them.
    /// `point` is the key's encoded public point, nil for parameters alone.
    static func checkKeySettings(_ params: ParamReader, point: [UInt8]?, key what: String) throws {
        do {
            if let encoding = try params.string("encoding") { try checkEncoding(encoding) }
            if let format = try params.string("point-format") { try checkPointFormat(format) }
            if let mode = try params.int("use-cofactor-flag") { try checkCofactorFlag(mode) }
            if let check = try params.string("group-check") { try checkGroupCheck(check) }
            if let include = try params.int("include-public"), include == 0 {
                throw ProviderError(
                    .unsupported,
                    "include-public 0 shapes how the private key is encoded, and the private half of an HSM key is "
                        + "never encoded")
            }
            if params.contains("seed") { throw explicitCurve("seed") }
            if let encoded = try params.octets("encoded-pub-key"), encoded != point {
                throw ProviderError(
                    .unsupported, "encoded-pub-key: the public half of an HSM key is the HSMs' and does not change")
            }
        } catch let error as ProviderError {
            throw ProviderError(error.reason, "\(error.message) (setting a parameter of \(what))")
        }
    }
}

/// EC key generation in the HSMs: a named curve the HSMs hold, its points uncompressed.
/// Every other setting the default provider takes is taken when it changes nothing about
/// such a key, and refused by name otherwise.
final class ECKeyGeneration: KeyGeneration {
    private(set) var curve: ECCurve?

    func apply(_ params: ParamReader) throws {
        if let name = try params.string("group") { curve = try Self.curve(named: name) }
        if let encoding = try params.string("encoding") { try ECSettings.checkEncoding(encoding) }
        if let format = try params.string("point-format") { try ECSettings.checkPointFormat(format) }
        if let mode = try params.int("use-cofactor-flag") { try ECSettings.checkCofactorFlag(mode) }
        if let check = try params.string("group-check") { try ECSettings.checkGroupCheck(check) }
        for name: StaticString in ["field-type", "p", "a", "b", "generator", "order", "cofactor", "seed"]
        where params.contains(name) {
            throw ECSettings.explicitCurve(name)
        }
    }

    func apply(template: DomainParameters) throws {
        for case .string(let name, let value) in template.values where name.description == "group" {
            curve = try Self.curve(named: value)
            return
        }
        throw ProviderError(.invalidInput, "the template key names no curve")
    }

    /// A curve the HSMs hold, by any name OpenSSL knows it by; a curve OpenSSL knows and the
    /// HSMs do not is refused by name, a name OpenSSL does not know as unknown.
    static func curve(named name: String) throws -> ECCurve {
        if let curve = ECCurve(name: name) { return curve }
        let known = discardingOpenSSLErrors {
            (try? DomainParameters(type: ECKeyType.self, values: [.string("group", name)])) != nil
        }
        guard known else {
            throw ProviderError(.invalidInput, "EC curve '\(name)' is unknown to OpenSSL")
        }
        throw ProviderError(
            .unsupported,
            "EC curve \(name): the HSMs make EC keys on P-256 (prime256v1), P-384 (secp384r1) or P-521 (secp521r1)")
    }

    func domainParameters() throws -> DomainParameters? {
        guard let name = curve?.openSSLName else {
            throw ProviderError(
                .invalidInput,
                "no curve set for the EC key: name one (-pkeyopt ec_paramgen_curve:P-256, or group:P-384)")
        }
        return try DomainParameters(type: ECKeyType.self, values: [.string("group", name)])
    }

    func generate(with keys: KeyService) throws -> KeyReference {
        guard let curve else {
            throw ProviderError(.invalidInput, "no curve set for the EC key")
        }
        return try keys.generateKeyPair(
            .generateECKeyPair(curve: curve, label: "openssl-genpkey", isSession: false, isExtractable: false),
            label: "openssl-genpkey", what: "an EC key on \(curve.name)")
    }
}

// MARK: - The type's own keymgmt functions

private func ecNew(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    KeyManagement.newKey(ECKeyType.self)
}

private let ecDomainTypes: [(StaticString, Int32)] = [
    ("group", OSSL_PARAM_UTF8_STRING), ("encoding", OSSL_PARAM_UTF8_STRING),
    ("point-format", OSSL_PARAM_UTF8_STRING),
]
private let ecPublicTypes = paramTable(ecDomainTypes + [("pub", OSSL_PARAM_OCTET_STRING)])
private let ecDomainOnlyTypes = paramTable(ecDomainTypes)

/// The group and the point: the private scalar is never imported or exported.
private func ecImportExportTypes(_ selection: Int32) -> UnsafePointer<OSSL_PARAM>? {
    if selection & Selection.keyPair != 0 { return ecPublicTypes }
    return selection & Selection.domainParameters != 0 ? ecDomainOnlyTypes : nil
}

/// As the default provider lists them (ec_kmgmt.c), the private scalar included: asking
/// for it with an HSM key is refused by name rather than left unanswered.
private let ecGettable = paramTable([
    ("bits", OSSL_PARAM_INTEGER), ("security-bits", OSSL_PARAM_INTEGER), ("max-size", OSSL_PARAM_INTEGER),
    ("default-digest", OSSL_PARAM_UTF8_STRING), ("encoded-pub-key", OSSL_PARAM_OCTET_STRING),
    ("decoded-from-explicit", OSSL_PARAM_INTEGER), ("group", OSSL_PARAM_UTF8_STRING),
    ("encoding", OSSL_PARAM_UTF8_STRING), ("point-format", OSSL_PARAM_UTF8_STRING),
    ("field-type", OSSL_PARAM_UTF8_STRING), ("p", OSSL_PARAM_UNSIGNED_INTEGER), ("a", OSSL_PARAM_UNSIGNED_INTEGER),
    ("b", OSSL_PARAM_UNSIGNED_INTEGER), ("generator", OSSL_PARAM_OCTET_STRING),
    ("order", OSSL_PARAM_UNSIGNED_INTEGER), ("cofactor", OSSL_PARAM_UNSIGNED_INTEGER),
    ("seed", OSSL_PARAM_OCTET_STRING), ("pub", OSSL_PARAM_OCTET_STRING), ("qx", OSSL_PARAM_UNSIGNED_INTEGER),
    ("qy", OSSL_PARAM_UNSIGNED_INTEGER), ("priv", OSSL_PARAM_UNSIGNED_INTEGER),
    ("use-cofactor-flag", OSSL_PARAM_INTEGER), ("include-public", OSSL_PARAM_INTEGER),
    ("m", OSSL_PARAM_INTEGER), ("basis-type", OSSL_PARAM_UTF8_STRING), ("tp", OSSL_PARAM_INTEGER),
    ("k1", OSSL_PARAM_INTEGER), ("k2", OSSL_PARAM_INTEGER), ("k3", OSSL_PARAM_INTEGER),
])

private func ecGettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    ecGettable
}

/// The default provider's settable table. A key of ours never changes (it is shared by
/// duplicates, and an HSM key's public half is the HSMs'): a setting that leaves it as it
/// is is taken, any other refused by name (ECSettings); only a parameters-only key takes a
/// point and becomes a public key (EVP_PKEY_set1_encoded_public_key on a key made by
/// parameter generation).
private let ecSettable = paramTable([
    ("use-cofactor-flag", OSSL_PARAM_INTEGER), ("encoded-pub-key", OSSL_PARAM_OCTET_STRING),
    ("encoding", OSSL_PARAM_UTF8_STRING), ("point-format", OSSL_PARAM_UTF8_STRING),
    ("seed", OSSL_PARAM_OCTET_STRING), ("include-public", OSSL_PARAM_INTEGER),
    ("group-check", OSSL_PARAM_UTF8_STRING),
])

private func ecSettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    ecSettable
}

private func ecSetParams(_ keydata: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?) -> Int32 {
    reportingStatus("setting EC key parameters") {
        let holder = try provided(keydata, as: KeyHolder.self)
        let reader = ParamReader(params)
        if holder.key == nil, holder.deferred == nil, let parameters = holder.parameters,
            let point = try reader.octets("encoded-pub-key"), reader.keys.count == 1
        {
            let group = parameters.values.first { $0.key.description == "group" }
            guard case .string(_, let name)? = group else {
                throw ProviderError(.invalidInput, "the EC parameters name no curve")
            }
            holder.key = try ProviderKey(
                type: ECKeyType.self, importing: [.string("group", name), .octets("pub", point)])
            holder.parameters = nil
            return
        }
        let what = holder.key?.reference.map { "EC key handle \($0.handle)" } ?? "an EC key of the CloudHSM provider"
        try ECSettings.checkKeySettings(reader, point: holder.key.map { $0.octets("pub") }, key: what)
    }
}

/// Signatures go to "ECDSA", key exchange to "ECDH" (which refuses HSM keys by name).
private func ecQueryOperationName(_ operation: Int32) -> UnsafePointer<CChar>? {
    switch operation {
    case OSSL_OP_SIGNATURE: return cString("ECDSA")
    case OSSL_OP_KEYEXCH: return cString("ECDH")
    default: return nil
    }
}

private func ecGenerationInit(
    _ provider: UnsafeMutableRawPointer?, _ selection: Int32, _ params: UnsafePointer<OSSL_PARAM>?
) -> UnsafeMutableRawPointer? {
    KeyManagement.generationInit(ECKeyType.self, selection: selection, params: params)
}

/// The default provider's table (ec_kmgmt.c): every name is listed, so each is taken or
/// refused by name rather than rejected by OpenSSL as unknown.
private let ecGenerationSettable = paramTable([
    ("group", OSSL_PARAM_UTF8_STRING), ("use-cofactor-flag", OSSL_PARAM_INTEGER),
    ("encoding", OSSL_PARAM_UTF8_STRING), ("point-format", OSSL_PARAM_UTF8_STRING),
    ("field-type", OSSL_PARAM_UTF8_STRING), ("p", OSSL_PARAM_UNSIGNED_INTEGER), ("a", OSSL_PARAM_UNSIGNED_INTEGER),
    ("b", OSSL_PARAM_UNSIGNED_INTEGER), ("generator", OSSL_PARAM_OCTET_STRING),
    ("order", OSSL_PARAM_UNSIGNED_INTEGER), ("cofactor", OSSL_PARAM_UNSIGNED_INTEGER),
    ("seed", OSSL_PARAM_OCTET_STRING),
])

private func ecGenerationSettableParams(_ context: UnsafeMutableRawPointer?, _ provider: UnsafeMutableRawPointer?)
    -> UnsafePointer<OSSL_PARAM>?
{
    ecGenerationSettable
}
