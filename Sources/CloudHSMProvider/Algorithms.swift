// Everything the provider offers, by operation: what query_operation answers. Complete
// from the first call, because nginx creates its SSL_CTX before loading the key and
// OpenSSL caches what it was told.

import COpenSSL

enum Algorithms {
    static let rsaNames: StaticString = "RSA:rsaEncryption:1.2.840.113549.1.1.1"

    static let keyManagement = algorithmTable([
        AlgorithmEntry(
            names: rsaNames, properties: "provider=cloudhsm", implementation: RSAKeyManagement.dispatch,
            description: "CloudHSM RSA key management (private keys stay in the HSMs)")
    ])

    static let signature = algorithmTable([
        AlgorithmEntry(
            names: rsaNames, properties: "provider=cloudhsm", implementation: RSASignature.dispatch,
            description: "CloudHSM RSA signatures (PKCS#1 v1.5 and PSS)")
    ])

    static let asymmetricCipher = algorithmTable([
        AlgorithmEntry(
            names: rsaNames, properties: "provider=cloudhsm", implementation: RSAAsymmetricCipher.dispatch,
            description: "CloudHSM RSA decryption (PKCS#1 v1.5, OAEP, raw, TLS 1.2 key exchange)")
    ])

    static let encoder = algorithmTable([
        AlgorithmEntry(
            names: rsaNames, properties: "provider=cloudhsm,output=pem,structure=PrivateKeyInfo",
            implementation: KeyReferenceEncoder.pemDispatch, description: "CloudHSM key reference (fake PEM) writer"),
        AlgorithmEntry(
            names: rsaNames, properties: "provider=cloudhsm,output=text",
            implementation: KeyReferenceEncoder.textDispatch, description: "CloudHSM key reference text writer"),
    ])

    static let decoder = algorithmTable([
        AlgorithmEntry(
            names: "DER", properties: "provider=cloudhsm,input=pem", implementation: KeyReferenceDecoder.pemDispatch,
            description: "CloudHSM key reference PEM reader"),
        AlgorithmEntry(
            names: rsaNames, properties: "provider=cloudhsm,input=der,structure=CloudHSMKeyReference",
            implementation: KeyReferenceDecoder.derDispatch, description: "CloudHSM key reference reader"),
    ])

    static func table(for operation: Int32) -> UnsafePointer<OSSL_ALGORITHM>? {
        switch operation {
        case OSSL_OP_KEYMGMT: return keyManagement
        case OSSL_OP_SIGNATURE: return signature
        case OSSL_OP_ASYM_CIPHER: return asymmetricCipher
        case OSSL_OP_ENCODER: return encoder
        case OSSL_OP_DECODER: return decoder
        default: return nil
        }
    }
}
