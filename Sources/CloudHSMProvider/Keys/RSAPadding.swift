// RSA padding modes, shared by the RSA signature and asymmetric cipher: the mode arrives
// as an integer from libssl and as a word from -sigopt and -pkeyopt, and is answered in
// the form asked. Which modes an operation takes is the operation's to decide.

import COpenSSL

enum RSAPadding: Int32, CaseIterable, CustomStringConvertible {
    // OpenSSL's numbers (rsa.h); a unit test holds them to the header's macros.
    case pkcs1 = 1
    case none = 3
    case oaep = 4
    case x931 = 5
    case pss = 6
    /// TLS 1.2's RSA key exchange: set by libssl as a number only.
    case tls = 7

    /// The word -sigopt and -pkeyopt use; nil for the TLS mode, which has none.
    var word: StaticString? {
        switch self {
        case .pkcs1: return "pkcs1"
        case .none: return "none"
        case .oaep: return "oaep"
        case .x931: return "x931"
        case .pss: return "pss"
        case .tls: return nil
        }
    }

    var description: String { word?.description ?? "pkcs1 for TLS key exchange (\(rawValue))" }

    /// The mode in `pad-mode`: nil when absent. Unknown words and numbers are refused by
    /// name (the default provider keeps its previous mode for an unknown word; a setting
    /// the provider would silently not apply is refused instead).
    static func read(_ reader: ParamReader) throws -> RSAPadding? {
        guard reader.contains("pad-mode") else { return nil }
        if reader.isString("pad-mode") {
            let text = try reader.string("pad-mode") ?? ""
            // "oeap" is OpenSSL's own historical misspelling, which its cipher accepts.
            if text == "oeap" { return .oaep }
            guard let mode = allCases.first(where: { $0.word?.description == text }) else {
                throw ProviderError(
                    .unsupported, "RSA padding mode '\(text)' is unknown (OpenSSL's are pkcs1, pss, oaep, none, x931)")
            }
            return mode
        }
        guard let number = try reader.int("pad-mode"), let mode = Int32(exactly: number).flatMap(RSAPadding.init)
        else {
            throw ProviderError(.unsupported, "RSA padding mode \(try reader.int("pad-mode") ?? -1) is unknown")
        }
        return mode
    }

    /// Answers `pad-mode` as an integer or a word, whichever the caller's parameter is.
    func write(_ writer: ParamWriter) throws {
        guard writer.isRequested("pad-mode") else { return }
        if writer.wantsInteger("pad-mode") {
            try writer.set("pad-mode", int: Int(rawValue))
            return
        }
        guard let word else {
            throw ProviderError(.unsupported, "padding mode \(self) has no name; ask for pad-mode as an integer")
        }
        try writer.set("pad-mode", staticString: word)
    }
}
