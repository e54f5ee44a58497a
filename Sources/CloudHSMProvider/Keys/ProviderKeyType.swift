// The shape of one key type: what the common key management, decoder and encoder need to
// know about it (after pkcs11-provider's kmgmt/rsa.c and ec.c, which plug into
// kmgmt/common.c). A new key type is a new file implementing `ProviderKeyType` and its
// `KeyGeneration`, listed in `Algorithms.keyTypes`; its signature scheme implements
// `SignatureScheme` (Signature/SignatureScheme.swift).

import COpenSSL
import CloudHSMCore
import OpenSSLKit

protocol ProviderKeyType {
    /// OpenSSL's name for the type: the `data-type` of decoded keys, what `EVP_PKEY_is_a`
    /// and libssl check, what the keymgmt answers for query_operation_name.
    static var name: StaticString { get }
    /// The names its algorithms are registered under ("RSA:rsaEncryption:1.2.840.113549.1.1.1").
    static var algorithmNames: StaticString { get }
    /// The description of its keymgmt row.
    static var keyManagementDescription: StaticString { get }
    /// The HSMs' key type: what a key handle must hold for a key file of this type.
    static var hsmKeyType: KeyType { get }
    /// The type's keymgmt dispatch table: the shared functions plus its own.
    static var keyManagement: UnsafePointer<OSSL_DISPATCH> { get }
    /// The property definition of its keymgmt row (provider.cnf's query reads it).
    static var keyManagementProperties: StaticString { get }

    /// The public key's parameters, as export and get_params give them (RSA: n and e).
    static func publicParameters(of key: EVPKey) throws -> [ParamValue]
    /// The public parameters of an import, checked (its selection includes the key pair).
    static func importedPublicParameters(_ params: ParamReader, selection: Int32) throws -> [ParamValue]
    /// What export hands OpenSSL for `selection` (never private parameters).
    static func exportedParameters(of key: ProviderKey, selection: Int32) -> [ParamValue]
    /// Whether keys of the type carry domain parameters (EC's group).
    static var hasDomainParameters: Bool { get }
    /// The domain parameters of a key or of a parameters-only key, as export hands them
    /// out (EC: group, encoding, point format); empty for a type without (RSA).
    static func domainParameterValues(of key: EVPKey) throws -> [ParamValue]
    /// The domain parameters an import or a template carries (EC: a named curve); nil
    /// when it carries none, and always for a type without domain parameters.
    static func importedDomainParameters(_ params: ParamReader) throws -> DomainParameters?
    /// The names of get_params that only a key (not its domain parameters) answers: asking
    /// for one makes a deferred key (RSA: n, e; EC: pub, encoded-pub-key, qx, qy).
    static var publicKeyParameterNames: [StaticString] { get }
    /// The private-key parameters of the type, which get_params, import and export refuse
    /// by name for HSM keys: the private half never leaves the HSMs.
    static var privateParameterNames: [StaticString] { get }
    /// What get_params answers beyond bits, security-bits, max-size and the public
    /// parameters (RSA: default-digest).
    static func answerParameters(_ writer: ParamWriter, for key: ProviderKey) throws
    /// Whether two keys of the type are the same in the parts `selection` names.
    static func matches(_ a: ProviderKey, _ b: ProviderKey, selection: Int32) -> Bool
    /// The lines `openssl pkey -text` shows after the key reference's own.
    static func describePublicKey(_ key: ProviderKey) -> String
    /// What `pkey -text` says of the key's size in its first line ("2048 bit").
    static func sizeDescription(_ key: ProviderKey) -> String
    /// A key generation with the type's defaults.
    static func makeGeneration() -> any KeyGeneration
    /// The type's signature scheme: `pkey -check` signs with it in the HSM and verifies.
    static var signatureScheme: any SignatureScheme.Type { get }
}

extension ProviderKeyType {
    /// How messages name the type.
    static var displayName: String { name.description }

    static var keyManagementProperties: StaticString { "provider=cloudhsm" }

    /// Whether keys of the type carry domain parameters (EC's group).
    static var hasDomainParameters: Bool { false }

    /// The public parameters for a selection with the public key, and the domain
    /// parameters for a selection that asks for those.
    static func exportedParameters(of key: ProviderKey, selection: Int32) -> [ParamValue] {
        var values: [ParamValue] = []
        if selection & Selection.domainParameters != 0 { values += key.domainParameters }
        if selection & Selection.publicKey != 0 {
            values += key.publicParameters.filter { value in
                !values.contains { $0.key.description == value.key.description }
            }
        }
        return values
    }

    static func domainParameterValues(of key: EVPKey) throws -> [ParamValue] { [] }

    static func importedDomainParameters(_ params: ParamReader) throws -> DomainParameters? { nil }

    /// The same key when the public parameters are the same, and the same domain
    /// parameters when the selection asks for those.
    static func matches(_ a: ProviderKey, _ b: ProviderKey, selection: Int32) -> Bool {
        guard a.type == b.type else { return false }
        if selection & Selection.domainParameters != 0, a.domainParameters != b.domainParameters { return false }
        if selection & Selection.keyPair != 0 { return a.publicParameters == b.publicParameters }
        return true
    }

    static func sizeDescription(_ key: ProviderKey) -> String { "\(key.bits) bit" }
}

/// One key generation in the HSMs, from gen_init to gen (pkcs11-provider's key_generator).
protocol KeyGeneration: AnyObject {
    /// Applies gen_init and gen_set_params settings; what the HSMs cannot make is refused
    /// here, by name.
    func apply(_ params: ParamReader) throws
    /// Takes the domain parameters of a template key (gen_set_template: `ecparam -genkey`,
    /// `genpkey -paramfile`).
    func apply(template: DomainParameters) throws
    /// The domain parameters the generation makes keys with, for a type that has them
    /// (EC: the curve); nil for a type without (RSA). With them, gen hands out a key
    /// whose HSM request waits for its first use (see `DeferredKey`), and a parameter
    /// generation answers them alone.
    func domainParameters() throws -> DomainParameters?
    /// Makes the key pair in the HSMs and answers the reference to its private key.
    func generate(with keys: KeyService) throws -> KeyReference
}

extension KeyGeneration {
    func apply(template: DomainParameters) throws {}
    func domainParameters() throws -> DomainParameters? { nil }
}

/// OpenSSL's keymgmt selection bits.
enum Selection {
    static let privateKey = Int32(OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
    static let publicKey = Int32(OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
    static let keyPair = privateKey | publicKey
    static let domainParameters = Int32(OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS)
}

/// Two key types are equal when they are the same type.
func == (a: any ProviderKeyType.Type, b: any ProviderKeyType.Type) -> Bool {
    ObjectIdentifier(a) == ObjectIdentifier(b)
}
