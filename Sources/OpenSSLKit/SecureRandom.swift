// Random bytes from the library context's DRBG: salts, nonces, master keys, AES keys and
// the node's generateRandom answers.

import COpenSSL

public enum SecureRandom {
    public static func bytes(_ count: Int, context: CryptoContext) throws -> [UInt8] {
        guard count >= 0 else { throw CryptoError.invalidArgument("negative random byte count") }
        guard count > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: count)
        let result = out.withUnsafeMutableBufferPointer { RAND_bytes_ex(context.pointer, $0.baseAddress, count, 0) }
        guard result == 1 else { throw OpenSSLError.capture("generating random bytes") }
        return out
    }
}
