// The RSA operation parameters that signature and asym cipher contexts share: the
// padding mode, which arrives as an integer from libssl and as a word from -sigopt and
// -pkeyopt and is answered in the form asked; digest names in any of OpenSSL's
// spellings; and forwarding settings to a shadow default-provider operation.

import COpenSSL
import CloudHSMCore

/// The padding modes one operation accepts, with their words.
struct PaddingModes {
    let words: [(word: StaticString, mode: Int32)]

    static let signature = PaddingModes(words: [
        ("pkcs1", RSA_PKCS1_PADDING), ("pss", RSA_PKCS1_PSS_PADDING), ("none", RSA_NO_PADDING),
    ])

    /// Decryption also takes TLS 1.2's key-exchange mode, which has no word (libssl sets it
    /// as an integer); "oeap" is OpenSSL's own historical misspelling, accepted as it is.
    static let cipher = PaddingModes(words: [
        ("pkcs1", RSA_PKCS1_PADDING), ("none", RSA_NO_PADDING), ("oaep", RSA_PKCS1_OAEP_PADDING),
        ("oeap", RSA_PKCS1_OAEP_PADDING),
    ])
    static let cipherIntegerOnly: [Int32] = [RSA_PKCS1_WITH_TLS_PADDING]

    /// The mode in `params`: nil when absent; throws on a mode this operation does not take.
    func read(_ reader: ParamReader, alsoAccepting extra: [Int32] = []) throws -> Int32? {
        guard reader.contains("pad-mode") else { return nil }
        if reader.dataType("pad-mode") == UInt32(OSSL_PARAM_UTF8_STRING) {
            let text = reader.string("pad-mode") ?? ""
            guard let match = words.first(where: { $0.word.description == text }) else {
                throw ProviderError(.unsupported, "RSA padding mode '\(text)'")
            }
            return match.mode
        }
        guard let mode = reader.int("pad-mode").map(Int32.init),
            words.contains(where: { $0.mode == mode }) || extra.contains(mode)
        else { throw ProviderError(.unsupported, "RSA padding mode \(reader.int("pad-mode") ?? -1)") }
        return mode
    }

    /// Answers `pad-mode` as an integer or a word, whichever the caller's parameter is.
    func write(_ writer: ParamWriter, _ mode: Int32) -> Bool {
        guard let slot = writer.locate("pad-mode") else { return true }
        if slot.pointee.data_type == UInt32(OSSL_PARAM_INTEGER) { return writer.set("pad-mode", int: Int(mode)) }
        guard let word = words.first(where: { $0.mode == mode })?.word else { return false }
        return writer.set("pad-mode", staticString: word)
    }
}

extension ParamReader {
    /// A digest parameter: nil when absent; throws on a digest name we cannot use.
    func digest(_ key: StaticString) throws -> DigestAlgorithm? {
        guard contains(key) else { return nil }
        guard let name = string(key), let algorithm = DigestAlgorithm(name: name) else {
            throw ProviderError(.unsupported, "digest '\(string(key) ?? "?")' for \(key)")
        }
        return algorithm
    }
}

/// Hands the same settings to a shadow default-provider operation, so its public-key
/// work (verify, encrypt) uses exactly what the application asked for.
func forward(_ params: UnsafePointer<OSSL_PARAM>, to shadow: OpaquePointer?) -> Bool {
    guard let shadow else { return true }
    ERR_set_mark()
    defer { ERR_pop_to_mark() }
    return EVP_PKEY_CTX_set_params(shadow, params) == 1
}
