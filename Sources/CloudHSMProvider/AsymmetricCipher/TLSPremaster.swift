// TLS 1.2's RSA key exchange (RSA_PKCS1_WITH_TLS_PADDING): a raw private operation on
// the HSM, then the PKCS#1 type 2 and version checks here, in constant time. Any failure
// of the padding yields 48 random bytes and success, never an error (RFC 5246 section
// 7.4.7.1, implicit rejection): an error would tell an attacker which guesses pad well.

enum TLSPremaster {
    /// The premaster secret's length, which libssl's output buffer has.
    static let length = 48

    /// The premaster secret in `ciphertext`, or `random` when its padding or version is wrong.
    ///
    /// - Parameters:
    ///   - keySize: the modulus size in bytes.
    ///   - random: 48 fresh random bytes, drawn before the decryption so that both paths
    ///     cost the same.
    ///   - rawDecrypt: the raw RSA private operation (the HSM's).
    /// - Throws: only for what is not the padding's fault: no client version, an HSM that
    ///   cannot be reached or answers a block of the wrong size.
    static func secret(
        ciphertext: [UInt8], keySize: Int, clientVersion: UInt32, negotiatedVersion: UInt32, random: [UInt8],
        rawDecrypt: ([UInt8]) throws -> [UInt8]
    ) throws -> [UInt8] {
        guard clientVersion > 0 else {
            throw ProviderError(.invalidInput, "TLS padding needs the client version (tls-client-version)")
        }
        guard random.count == length, keySize >= length + 11 else {
            throw ProviderError(
                .invalidInput, "a TLS premaster secret needs 48 random bytes and a key of 59 bytes or more")
        }
        guard ciphertext.count == keySize else { return random }
        let block = try rawDecrypt(ciphertext)
        guard block.count == keySize else {
            throw ProviderError(.hsmOperationFailed, "the HSM returned \(block.count) bytes for a \(keySize)-byte key")
        }
        return select(block: block, random: random, clientVersion: clientVersion, negotiatedVersion: negotiatedVersion)
    }

    /// 0xff when `x` is zero, else 0, without a branch on `x`.
    @inline(__always) static func isZero(_ x: UInt8) -> UInt8 {
        UInt8(truncatingIfNeeded: (UInt32(x) &- 1) >> 8)
    }

    @inline(__always) static func equal(_ a: UInt8, _ b: UInt8) -> UInt8 { isZero(a ^ b) }

    /// `block` is the raw RSA result, as long as the modulus. Returns its 48-byte message
    /// when the padding is `00 02 PS 00 M` with |M| = 48 and M starts with the client's
    /// version (or, for old clients with the rollback bug, the negotiated one); else `random`.
    static func select(block: [UInt8], random: [UInt8], clientVersion: UInt32, negotiatedVersion: UInt32) -> [UInt8] {
        let k = block.count
        precondition(k >= length + 11 && random.count == length)
        var good = isZero(block[0]) & equal(block[1], 2) & isZero(block[k - length - 1])
        for index in 2..<(k - length - 1) { good &= ~isZero(block[index]) }
        let major = block[k - length]
        let minor = block[k - length + 1]
        var versionGood =
            equal(major, UInt8(truncatingIfNeeded: clientVersion >> 8))
            & equal(minor, UInt8(truncatingIfNeeded: clientVersion))
        if negotiatedVersion > 0 {
            let alternative =
                equal(major, UInt8(truncatingIfNeeded: negotiatedVersion >> 8))
                & equal(minor, UInt8(truncatingIfNeeded: negotiatedVersion))
            versionGood |= alternative
        }
        good &= versionGood
        var result = [UInt8](repeating: 0, count: length)
        for index in 0..<length {
            result[index] = (block[k - length + index] & good) | (random[index] & ~good)
        }
        return result
    }
}
