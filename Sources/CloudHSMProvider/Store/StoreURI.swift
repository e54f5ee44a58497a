// The `cloudhsm:` URIs the store loader opens: which of the crypto user's private keys a
// program means when it names a key without a key file (`openssl pkey -in
// cloudhsm:label=web_server_imported_key`). Pure parsing, no OpenSSL and no network, so
// every refusal is unit-tested. The shape follows RFC 7512's `pkcs11:` URIs, which
// pkcs11-provider users already type: no `//`, attributes separated by `;`, values
// percent-encoded where they must be.

import CloudHSMCore

/// A parsed `cloudhsm:` URI.
///
/// ```
/// cloudhsm:                       every private key of the crypto user
/// cloudhsm:handle=<decimal>       the private key with that handle
/// cloudhsm:label=<label>          the one private key with that label
/// cloudhsm:handle=<n>;label=<l>   handle n, which must carry label l
/// ```
///
/// The scheme is matched without regard to case (RFC 3986); attribute names are
/// lowercase. In a label, `%` starts an escape of two hex digits (`%25` for `%` itself,
/// `%3B` for `;`, `%20` for a space if the shell makes that easier); every other
/// character stands for itself. The decoded label must be UTF-8. There is no `//`: an
/// authority would have nothing to name, and a form with and without it would be two
/// spellings of one key.
struct StoreURI: Equatable, CustomStringConvertible {
    /// The scheme, as OpenSSL looks the loader up (the name of its row in Algorithms).
    static let scheme = "cloudhsm"
    /// How messages tell the user what a URI may look like.
    static let forms = "cloudhsm:handle=N, cloudhsm:label=NAME, both joined by ';', or cloudhsm: alone for every key"

    /// The longest label a key can carry, in UTF-8 bytes: what the wire protocol admits
    /// (HSMRequest's key-generation and findKeys decoders).
    static let maximumLabelBytes = 256

    /// The key's handle, when the URI names one.
    var handle: KeyHandle?
    /// The key's label, percent-decoded, when the URI names one.
    var label: String?

    init(handle: KeyHandle? = nil, label: String? = nil) {
        self.handle = handle
        self.label = label
    }

    /// True for `cloudhsm:` alone: the store lists every private key of the crypto user.
    var listsEveryKey: Bool { handle == nil && label == nil }

    /// Parses `text`, the whole URI as the application gave it.
    ///
    /// - Throws: `ProviderError(.invalidInput)` naming what is wrong: another scheme, a
    ///   `//`, an attribute that is empty, unknown, repeated or has no value, a handle
    ///   that is not a decimal number, a broken percent escape, a label that is empty,
    ///   not UTF-8, holds a NUL or is longer than any key label.
    init(parsing text: String) throws {
        // Split on the bytes ':', ';' and '=', never on Characters: a combining mark after
        // a ';' would otherwise fuse with it and hide the separator, where OpenSSL and
        // every other URI reader see one.
        let bytes = Array(text.utf8)
        func piece(_ slice: ArraySlice<UInt8>) -> Substring { Substring(String(decoding: slice, as: UTF8.self)) }
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
            bytes[..<colon].map({ (0x41...0x5a).contains($0) ? $0 | 0x20 : $0 }).elementsEqual(Self.scheme.utf8)
        else {
            throw Self.malformed(text, "it does not start with '\(Self.scheme):'")
        }
        let rest = bytes[(colon + 1)...]
        if rest.starts(with: "//".utf8) {
            throw Self.malformed(text, "a cloudhsm: URI has no '//' part")
        }
        self.init()
        guard !rest.isEmpty else { return }
        for attribute in rest.split(separator: UInt8(ascii: ";"), omittingEmptySubsequences: false) {
            guard !attribute.isEmpty else {
                throw Self.malformed(text, "it has an empty attribute (two ';' in a row, or one at either end)")
            }
            guard let equals = attribute.firstIndex(of: UInt8(ascii: "=")) else {
                throw Self.malformed(
                    text, "attribute '\(Self.shown(piece(attribute)))' has no value (write handle=N or label=NAME)")
            }
            let name = attribute[..<equals]
            let value = piece(attribute[(equals + 1)...])
            if name.elementsEqual("handle".utf8) {
                guard handle == nil else { throw Self.malformed(text, "attribute 'handle' appears twice") }
                handle = try Self.handle(value, in: text)
            } else if name.elementsEqual("label".utf8) {
                guard label == nil else { throw Self.malformed(text, "attribute 'label' appears twice") }
                label = try Self.label(value, in: text)
            } else {
                throw Self.malformed(
                    text, "unknown attribute '\(Self.shown(piece(name)))' (a cloudhsm: URI takes handle and label)")
            }
        }
    }

    /// The URI in its canonical spelling: handle first, the label percent-encoded where
    /// it must be (and wherever a terminal would show something other than the byte).
    var description: String {
        var attributes: [String] = []
        if let handle { attributes.append("handle=\(handle)") }
        if let label { attributes.append("label=\(Self.percentEncoded(label))") }
        return "\(Self.scheme):" + attributes.joined(separator: ";")
    }

    // MARK: - Values

    private static func handle(_ value: Substring, in text: String) throws -> KeyHandle {
        guard !value.isEmpty else { throw malformed(text, "handle= has no number (write handle=N, N in decimal)") }
        guard value.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
            throw malformed(text, "handle '\(shown(value))' is not a decimal number")
        }
        guard let handle = KeyHandle(value) else {
            throw malformed(text, "handle \(shown(value)) is larger than any key handle (\(KeyHandle.max))")
        }
        return handle
    }

    private static func label(_ value: Substring, in text: String) throws -> String {
        guard !value.isEmpty else { throw malformed(text, "label= has no label (write label=NAME)") }
        var bytes: [UInt8] = []
        var index = value.utf8.startIndex
        let utf8 = value.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                index = utf8.index(after: index)
                continue
            }
            let first = utf8.index(after: index)
            let second = first < utf8.endIndex ? utf8.index(after: first) : first
            guard second < utf8.endIndex, let high = hexValue(utf8[first]), let low = hexValue(utf8[second]) else {
                let end = utf8.index(index, offsetBy: 3, limitedBy: utf8.endIndex) ?? utf8.endIndex
                let escape = String(decoding: utf8[index..<end], as: UTF8.self)
                throw malformed(
                    text, "'\(shown(escape))' in the label is not a percent escape (two hex digits; write % as %25)")
            }
            bytes.append(high << 4 | low)
            index = utf8.index(after: second)
        }
        guard let label = String(validating: bytes, as: UTF8.self) else {
            throw malformed(text, "the label is not UTF-8 once its percent escapes are decoded")
        }
        // No key can carry such a label (the wire protocol refuses it), so a lookup could
        // only fail with a less clear message.
        guard !bytes.contains(0) else {
            throw malformed(text, "the label holds a NUL byte (%00), which no key label can")
        }
        guard bytes.count <= maximumLabelBytes else {
            throw malformed(
                text,
                "the label is \(bytes.count) bytes long once decoded; a key label holds at most \(maximumLabelBytes)")
        }
        return label
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// `label` with `%`, `;`, spaces, control characters and bytes outside ASCII escaped.
    static func percentEncoded(_ label: String) -> String {
        var out = ""
        for byte in label.utf8 {
            switch byte {
            case UInt8(ascii: "%"), UInt8(ascii: ";"), UInt8(ascii: " "), 0..<0x20, 0x7f...:
                let digits = Array("0123456789ABCDEF")
                out += "%\(digits[Int(byte >> 4)])\(digits[Int(byte & 0xf)])"
            default:
                out.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return out
    }

    // MARK: - Errors

    private static func malformed(_ text: String, _ problem: String) -> ProviderError {
        ProviderError(
            .invalidInput, "malformed cloudhsm: URI '\(shown(text))': \(problem); the forms are \(forms)")
    }

    /// Text from the user, as messages show it: control characters escaped, cut short.
    static func shown<S: StringProtocol>(_ text: S) -> String {
        String(text).escapingControlCharacters.truncated(toUTF8Bytes: 120)
    }
}
