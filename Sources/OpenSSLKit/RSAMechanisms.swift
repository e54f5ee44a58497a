// How the wire's sign and decrypt mechanisms become OpenSSL padding settings, shared by
// the private and public RSA key types so signing and verifying agree exactly.

import COpenSSL
import CloudHSMCore

/// The digests an RSA key may need, fetched once when the key object is made: OpenSSL
/// 3.0 takes a lock on every fetch, which hurts when many threads sign at once.
final class DigestTable {
    private let digests: [DigestAlgorithm: FetchedDigest]

    init(context: CryptoContext) throws {
        var digests: [DigestAlgorithm: FetchedDigest] = [:]
        for algorithm in DigestAlgorithm.allCases {
            guard let name = algorithm.openSSLName else { continue }
            digests[algorithm] = try FetchedDigest(name: name, context: context)
        }
        self.digests = digests
    }

    func digest(_ algorithm: DigestAlgorithm) throws -> FetchedDigest {
        guard let digest = digests[algorithm] else {
            throw CryptoError.invalidArgument("the mechanism needs a digest")
        }
        return digest
    }
}

extension SignMechanism {
    /// Checks the input against what the mechanism signs, before OpenSSL sees it: a raw
    /// block must also be smaller than `modulus`, when it is given.
    func validate(inputLength: Int, modulusLength: Int, rawInput: (bytes: [UInt8], modulus: [UInt8])? = nil) throws {
        switch self {
        case .pkcs1(.none):
            guard inputLength > 0, inputLength <= modulusLength - 11 else {
                throw CryptoError.invalidArgument(
                    "PKCS#1 input of \(inputLength) bytes does not fit a \(modulusLength)-byte modulus")
            }
        case .pkcs1(let digest), .pss(let digest, _, _):
            guard inputLength == digest.outputLength else {
                throw CryptoError.invalidArgument(
                    "input is \(inputLength) bytes, a \(digest.openSSLName ?? "") digest is \(digest.outputLength)")
            }
        case .raw:
            guard inputLength == modulusLength else {
                throw CryptoError.invalidArgument(
                    "raw input is \(inputLength) bytes, the modulus is \(modulusLength)")
            }
            if let rawInput, let problem = RawRSABlock.problem(rawInput.bytes, modulus: rawInput.modulus) {
                throw CryptoError.invalidArgument(problem)
            }
        case .ecdsa:
            throw CryptoError.invalidArgument("ECDSA is a mechanism of EC keys, not of RSA keys")
        }
        if case .pss(let digest, _, let saltLength) = self {
            // Negative salt lengths are OpenSSL's special values; ours is a byte count.
            guard saltLength <= UInt32(Int32.max), Int(saltLength) <= modulusLength - digest.outputLength - 2 else {
                throw CryptoError.invalidArgument("PSS salt length \(saltLength) does not fit the modulus")
            }
        }
    }

    /// Sets padding, digest, MGF1 digest and salt length on a sign or verify operation.
    func configure(_ operation: OwnedPKeyContext, digests: DigestTable) throws {
        switch self {
        case .pkcs1(let digest):
            try operation.setPadding(RSA_PKCS1_PADDING)
            if digest != .none { try operation.setSignatureDigest(digests.digest(digest)) }
        case .pss(let digest, let mgf1Digest, let saltLength):
            try operation.setPadding(RSA_PKCS1_PSS_PADDING)
            try operation.setSignatureDigest(digests.digest(digest))
            try operation.setMGF1Digest(digests.digest(mgf1Digest))
            try operation.setPSSSaltLength(Int32(saltLength))
        case .raw:
            try operation.setPadding(RSA_NO_PADDING)
        case .ecdsa:
            throw CryptoError.invalidArgument("ECDSA is a mechanism of EC keys, not of RSA keys")
        }
    }
}

extension DecryptMechanism {
    /// Sets padding and, for OAEP, the digests and label on an encrypt or decrypt operation.
    func configure(_ operation: OwnedPKeyContext, digests: DigestTable) throws {
        switch self {
        case .raw:
            try operation.setPadding(RSA_NO_PADDING)
        case .pkcs1:
            try operation.setPadding(RSA_PKCS1_PADDING)
        case .oaep(let digest, let mgf1Digest, let label):
            try operation.setPadding(RSA_PKCS1_OAEP_PADDING)
            try operation.setOAEPDigest(digests.digest(digest))
            try operation.setMGF1Digest(digests.digest(mgf1Digest))
            try operation.setOAEPLabel(label)
        }
    }
}
