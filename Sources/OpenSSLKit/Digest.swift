// One-shot hashing for the hosts: the tools and the provider hash locally and send only
// the digest to the HSM.

import COpenSSL
import CloudHSMCore

public enum Digest {
    /// Hashes `data` with `algorithm`.
    ///
    /// - Throws: `CryptoError.invalidArgument` for `.none`.
    public static func hash(_ data: [UInt8], algorithm: DigestAlgorithm, context: CryptoContext) throws -> [UInt8] {
        guard let name = algorithm.openSSLName else { throw CryptoError.invalidArgument("no digest algorithm") }
        var out = [UInt8](repeating: 0, count: 64)
        var length = 0
        let result = out.withUnsafeMutableBufferPointer { outBuffer in
            data.withUnsafeBufferPointer {
                EVP_Q_digest(context.pointer, name, nil, $0.baseAddress, $0.count, outBuffer.baseAddress, &length)
            }
        }
        guard result == 1 else { throw OpenSSLError.capture("hashing with \(name)") }
        out.removeSubrange(length...)
        return out
    }
}
