// Everything the provider offers, by operation: what query_operation answers, in one
// place (OpenSSL's defltprov.c). Complete from the first call, because nginx creates its
// SSL_CTX before loading the key and OpenSSL caches what it was told. Adding a key type
// is adding it to `keyTypes` (keymgmt, encoders and decoders follow) and a row for its
// signature scheme.

import COpenSSL
import OpenSSLKit

enum Algorithms {
    /// Every key type the provider holds. The decoders pick one by the algorithm of the
    /// public key in a key reference.
    static let keyTypes: [any ProviderKeyType.Type] = [RSAKeyType.self, ECKeyType.self]

    static let keyManagement = algorithmTable(
        keyTypes.map {
            AlgorithmEntry(
                names: $0.algorithmNames, properties: $0.keyManagementProperties, implementation: $0.keyManagement,
                description: $0.keyManagementDescription)
        })

    static let signature = algorithmTable([
        AlgorithmEntry(
            names: RSAKeyType.algorithmNames, properties: "provider=cloudhsm", implementation: RSASignature.dispatch,
            description: "CloudHSM RSA signatures (PKCS#1 v1.5 and PSS)"),
        AlgorithmEntry(
            names: "ECDSA", properties: "provider=cloudhsm", implementation: ECDSASignature.dispatch,
            description: "CloudHSM ECDSA signatures (P-256, P-384, P-521)"),
    ])

    /// Only to refuse ECDH with an HSM key by name; marked like the EC keymgmt, so that
    /// software EC keys (TLS key shares) keep the default provider's ECDH.
    static let keyExchange = algorithmTable([
        AlgorithmEntry(
            names: "ECDH", properties: ECKeyType.keyManagementProperties, implementation: ECDHKeyExchange.dispatch,
            description: "CloudHSM ECDH (refuses HSM keys by name)")
    ])

    static let asymmetricCipher = algorithmTable([
        AlgorithmEntry(
            names: RSAKeyType.algorithmNames, properties: "provider=cloudhsm",
            implementation: RSAAsymmetricCipher.dispatch,
            description: "CloudHSM RSA decryption (PKCS#1 v1.5, OAEP, raw, TLS 1.2 key exchange)")
    ])

    static let encoder = algorithmTable(
        keyTypes.flatMap {
            [
                AlgorithmEntry(
                    names: $0.algorithmNames, properties: "provider=cloudhsm,output=pem,structure=PrivateKeyInfo",
                    implementation: KeyReferenceEncoder.pemDispatch,
                    description: "CloudHSM key reference (fake PEM) writer"),
                AlgorithmEntry(
                    names: $0.algorithmNames, properties: "provider=cloudhsm,output=text",
                    implementation: KeyReferenceEncoder.textDispatch, description: "CloudHSM key reference text writer"),
            ]
        })

    /// The PEM decoder is named DER: OpenSSL 3.0's file: store passes unstructured DER on
    /// (docs/traps.md). One DER row per key type, so each type's keymgmt finds it.
    static let decoder = algorithmTable(
        [
            AlgorithmEntry(
                names: "DER", properties: "provider=cloudhsm,input=pem",
                implementation: KeyReferenceDecoder.pemDispatch,
                description: "CloudHSM key reference PEM reader")
        ]
            + keyTypes.map {
                AlgorithmEntry(
                    names: $0.algorithmNames, properties: "provider=cloudhsm,input=der,structure=CloudHSMKeyReference",
                    implementation: KeyReferenceDecoder.derDispatch, description: "CloudHSM key reference reader")
            })

    /// The store loader, named by the URI scheme it opens (`cloudhsm:`).
    static let store = algorithmTable([
        AlgorithmEntry(
            names: "cloudhsm", properties: "provider=cloudhsm", implementation: KeyStoreLoader.dispatch,
            description: "CloudHSM private keys by URI: cloudhsm:handle=N, cloudhsm:label=NAME, cloudhsm:")
    ])

    static func table(for operation: Int32) -> UnsafePointer<OSSL_ALGORITHM>? {
        switch operation {
        case OSSL_OP_KEYMGMT: return keyManagement
        case OSSL_OP_SIGNATURE: return signature
        case OSSL_OP_ASYM_CIPHER: return asymmetricCipher
        case OSSL_OP_KEYEXCH: return keyExchange
        case OSSL_OP_ENCODER: return encoder
        case OSSL_OP_DECODER: return decoder
        case OSSL_OP_STORE: return store
        default: return nil
        }
    }

    /// The key type of `publicKey`; one the provider does not hold is refused by name.
    static func keyType(of publicKey: EVPKey) throws -> any ProviderKeyType.Type {
        if let type = keyTypes.first(where: { publicKey.isA($0.name.description) }) { return type }
        let supported = keyTypes.map { $0.displayName }.joined(separator: ", ")
        throw ProviderError(
            .unsupported,
            "the key file holds a public key of type \(publicKey.typeName): \(publicKey.typeName) keys are not "
                + "supported by this provider yet (it holds \(supported) keys)")
    }
}
