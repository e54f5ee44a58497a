// Finding the key reference block in the bytes of a key file, in one pass and within
// fixed limits. OpenSSL 3.0 may call the provider's decoder once for every position it
// reaches in a file (the file: store loops until the end of the input), so each call may
// look only at a bounded prefix of what is left, and must look at it linearly.

extension KeyReference {
    /// How much text the provider's decoder looks through for a key reference block, from
    /// where OpenSSL starts it; text without any PEM block beyond this is refused as too
    /// large. A fake PEM is about 1 KB; 64 KiB leaves room for certificates and comments.
    public static let searchLimit = 64 * 1024
    /// The longest key reference accepted, as a PEM block (BEGIN to END line) or as DER.
    public static let maximumEncodedLength = 64 * 1024

    /// What `scan` found in a prefix of a key file.
    public enum Scan: Equatable, Sendable {
        /// A complete key reference block: from the start of its BEGIN line to the end of
        /// its END line (line end included).
        case found(block: Range<Int>)
        /// The BEGIN line of a key reference at `begin`, and no END line after it.
        case unterminated(begin: Int)
        /// No key reference block. `sawPEM`: some BEGIN line was seen; `firstBlockEnd`:
        /// the end of the first complete PEM block of any kind; `lastLineStart`: where the
        /// last line, maybe cut off, starts (the count when the bytes end with a newline).
        case absent(sawPEM: Bool, firstBlockEnd: Int?, lastLineStart: Int)
    }

    private static let beginPrefix = Array("-----BEGIN ".utf8)
    private static let endPrefix = Array("-----END ".utf8)
    private static let ourLabel = Array("\(pemLabel)-----".utf8)

    /// Looks for a key reference block in `bytes`: a line that starts (after spaces or
    /// tabs) with `-----BEGIN CLOUDHSM KEY REFERENCE-----`, up to the next line that
    /// starts with its END marker. Other PEM blocks around it are fine. Linear in
    /// `bytes.count`.
    public static func scan(_ bytes: [UInt8]) -> Scan {
        bytes.withUnsafeBufferPointer { scan($0) }
    }

    private static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> Scan {
        var sawPEM = false
        var firstBegin: Int? = nil
        var firstBlockEnd: Int? = nil
        var lineStart = 0
        // A UTF-8 byte order mark may precede the first line.
        if bytes.count >= 3, bytes[0] == 0xef, bytes[1] == 0xbb, bytes[2] == 0xbf { lineStart = 3 }
        while lineStart < bytes.count {
            let newline = firstNewline(bytes, from: lineStart)
            let lineEnd = newline.map { $0 + 1 } ?? bytes.count
            var text = lineStart
            while text < bytes.count, bytes[text] == UInt8(ascii: " ") || bytes[text] == UInt8(ascii: "\t") {
                text += 1
            }
            if matches(bytes, at: text, beginPrefix) {
                sawPEM = true
                let isOurs = matches(bytes, at: text + beginPrefix.count, ourLabel)
                if isOurs {
                    guard newline != nil, let end = endLine(bytes, from: lineEnd, label: ourLabel) else {
                        return .unterminated(begin: lineStart)
                    }
                    return .found(block: lineStart..<end)
                }
                if firstBegin == nil { firstBegin = lineStart }
            } else if firstBlockEnd == nil, firstBegin != nil, matches(bytes, at: text, endPrefix) {
                firstBlockEnd = lineEnd
            }
            guard newline != nil else {
                return .absent(sawPEM: sawPEM, firstBlockEnd: firstBlockEnd, lastLineStart: lineStart)
            }
            lineStart = lineEnd
        }
        return .absent(sawPEM: sawPEM, firstBlockEnd: firstBlockEnd, lastLineStart: bytes.count)
    }

    /// The end (after its newline, if any) of the first line from `start` that begins,
    /// after spaces or tabs, with `-----END <label>`.
    private static func endLine(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, label: [UInt8]) -> Int? {
        var lineStart = start
        while lineStart < bytes.count {
            let newline = firstNewline(bytes, from: lineStart)
            var text = lineStart
            while text < bytes.count, bytes[text] == UInt8(ascii: " ") || bytes[text] == UInt8(ascii: "\t") {
                text += 1
            }
            if matches(bytes, at: text, endPrefix), matches(bytes, at: text + endPrefix.count, label) {
                return newline.map { $0 + 1 } ?? bytes.count
            }
            guard let newline else { return nil }
            lineStart = newline + 1
        }
        return nil
    }

    private static func firstNewline(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\n") { return index }
            index += 1
        }
        return nil
    }

    private static func matches(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int, _ pattern: [UInt8]) -> Bool {
        guard offset + pattern.count <= bytes.count else { return false }
        for (index, byte) in pattern.enumerated() where bytes[offset + index] != byte { return false }
        return true
    }

    /// True when `bytes` could be the start of a text file: no NUL and no control
    /// characters other than tab, line ends, form feed and escape. DER, PKCS#12 and
    /// other binary formats fail this within their first bytes.
    public static func looksLikeText(_ bytes: [UInt8]) -> Bool {
        bytes.allSatisfy { byte in
            byte >= 0x20 && byte != 0x7f || byte == 0x09 || byte == 0x0a || byte == 0x0c || byte == 0x0d
                || byte == 0x1b
        }
    }

    /// Reads the key reference in a block that `scan` found.
    public init(pemBlock bytes: ArraySlice<UInt8>) throws {
        guard let firstNewline = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            throw KeyReferenceError.malformed("the PEM block has no END line")
        }
        let end = Array("-----END \(Self.pemLabel)-----".utf8)
        var bodyEnd = bytes.endIndex
        // The END line is the block's last line; its marker starts after any indentation.
        var index = bytes.endIndex - end.count
        while index > firstNewline {
            if bytes[index..<index + end.count].elementsEqual(end) {
                bodyEnd = index
                break
            }
            index -= 1
        }
        guard bodyEnd < bytes.endIndex else { throw KeyReferenceError.malformed("the PEM block has no END line") }
        let body = String(decoding: bytes[(firstNewline + 1)..<bodyEnd], as: UTF8.self)
        guard let der = Base64.decode(Substring(body)) else {
            throw KeyReferenceError.malformed("the PEM block is not valid base64")
        }
        try self.init(der: der)
    }
}
