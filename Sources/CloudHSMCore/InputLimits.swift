// Limits on what a user may ask of the cluster, shared so that the tools and the
// provider refuse bad input themselves, with a message that names the limit, instead of
// sending it and relaying whatever a node makes of it.

/// User names as the nodes accept them when a user is created.
public enum UserName {
    /// Longer names cannot exist on a node (and the wire refuses more than 64 bytes).
    public static let maximumLength = 32

    /// Why `name` cannot be a user name, without repeating it (it may be huge); nil when
    /// its length is fine. The characters allowed are the node's to check.
    public static func problem(_ name: String) -> String? {
        let length = name.utf8.count
        if length == 0 { return "the user name is empty" }
        guard length <= maximumLength else {
            return "the user name is \(length) bytes long; user names are at most \(maximumLength) bytes"
        }
        return nil
    }
}

/// The public exponents the nodes use for new RSA keys.
public enum RSAPublicExponent {
    public static let `default`: UInt64 = 65537
    public static let minimum: UInt64 = 3
    /// Larger exponents only slow every public-key operation down, and some libraries
    /// refuse them.
    public static let maximum: UInt64 = 0xFFFF_FFFF
    public static let allowedDescription = "an odd number from 3 to 4294967295 (65537 is usual)"

    public static func isAllowed(_ exponent: UInt64) -> Bool {
        exponent >= minimum && exponent <= maximum && exponent & 1 == 1
    }
}

/// A block for a raw (unpadded) RSA private operation: exactly as long as the modulus
/// and, as a number, smaller than it. Anything else is an invalid argument, never an
/// internal error.
public enum RawRSABlock {
    /// Why `input` cannot be raw-signed with a key of this modulus (unsigned big-endian,
    /// leading zeros allowed); nil when it can.
    public static func problem(_ input: [UInt8], modulus: [UInt8]) -> String? {
        let n = modulus.drop(while: { $0 == 0 })
        guard input.count == n.count else {
            return "raw input is \(input.count) bytes, the modulus is \(n.count)"
        }
        // Same length, big-endian: the first differing byte decides.
        for (a, b) in zip(input, n) where a != b {
            return a < b ? nil : "raw input is not smaller than the modulus, as a raw RSA block must be"
        }
        return "raw input is not smaller than the modulus, as a raw RSA block must be"
    }
}

/// What an ECDSA signature signs: a digest, never a message. A node signs only inputs
/// as long as one of the SHA digests it knows, so a message passed by mistake (or a
/// truncated digest) is refused instead of signed.
public enum ECDSAInput {
    public static let acceptedLengths = [20, 28, 32, 48, 64]
    public static let acceptedDescription =
        "a SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 digest (20, 28, 32, 48 or 64 bytes)"

    /// Why `length` bytes cannot be signed with ECDSA over `digest`; nil when they can.
    public static func problem(length: Int, digest: DigestAlgorithm) -> String? {
        guard let name = digest.openSSLName else {
            guard acceptedLengths.contains(length) else {
                return "ECDSA input is \(length) bytes; it must be \(acceptedDescription)"
            }
            return nil
        }
        guard length == digest.outputLength else {
            return "ECDSA input is \(length) bytes, a \(name) digest is \(digest.outputLength)"
        }
        return nil
    }
}

extension StringProtocol {
    /// The text with control characters written as escapes (`\0`, `\n`, `\x1b`), for
    /// messages that repeat what a file or a user supplied: a NUL would cut the message
    /// short once it reaches C, and terminal controls would act on the reader's screen.
    public var escapingControlCharacters: String {
        guard unicodeScalars.contains(where: \.isControl) else { return String(self) }
        var out = ""
        for scalar in unicodeScalars {
            switch scalar {
            case "\0": out += "\\0"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case _ where scalar.isControl:
                let hex = String(scalar.value, radix: 16)
                out += scalar.value < 0x100 ? "\\x" + (hex.count < 2 ? "0" : "") + hex : "\\u{\(hex)}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// At most `limit` UTF-8 bytes of the text, cut at a character and marked as cut.
    public func truncated(toUTF8Bytes limit: Int) -> String {
        guard utf8.count > limit else { return String(self) }
        var kept = ""
        var used = 0
        let marker = "... (\(utf8.count) bytes in all)"
        for scalar in unicodeScalars {
            let size = String(scalar).utf8.count
            guard used + size + marker.utf8.count <= limit else { break }
            kept.unicodeScalars.append(scalar)
            used += size
        }
        return kept + marker
    }
}

extension Unicode.Scalar {
    /// C0 controls, DEL and C1 controls.
    fileprivate var isControl: Bool { value < 0x20 || (0x7f...0x9f).contains(value) }
}
