// Splitting an input line into words and reading AWS-style flags (`-l label`, `-sess`)
// from them, with the error messages the tool prints for bad or missing flags.

/// A problem with how a command was typed; printed as `Error: <command>: <message>`
/// followed by the command's usage line.
struct UsageError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// Splits on spaces and tabs; "double quotes" keep spaces inside one word.
func splitWords(_ line: String) throws -> [String] {
    var words: [String] = []
    var current = ""
    var inQuotes = false
    var hasWord = false
    for character in line {
        if character == "\"" {
            inQuotes.toggle()
            hasWord = true
        } else if !inQuotes && (character == " " || character == "\t" || character == "\r") {
            if hasWord { words.append(current) }
            current = ""
            hasWord = false
        } else {
            current.append(character)
            hasWord = true
        }
    }
    if inQuotes { throw UsageError("unterminated quote") }
    if hasWord { words.append(current) }
    return words
}

/// The flags of one command line, checked against what the command accepts.
struct Flags {
    private var values: [String: String] = [:]
    private var switches: Set<String> = []

    /// - Parameters:
    ///   - valued: flags followed by a value (`-l`).
    ///   - switches: flags that stand alone (`-sess`).
    init(_ words: [String], valued: Set<String>, switches allowedSwitches: Set<String>) throws {
        var index = 0
        while index < words.count {
            let word = words[index]
            if valued.contains(word) {
                guard index + 1 < words.count else { throw UsageError("\(word) needs a value") }
                guard values[word] == nil else { throw UsageError("\(word) is given more than once") }
                values[word] = words[index + 1]
                index += 2
            } else if allowedSwitches.contains(word) {
                switches.insert(word)
                index += 1
            } else if word.hasPrefix("-") {
                throw UsageError("unknown flag \(word)")
            } else {
                throw UsageError("unexpected argument '\(word)'")
            }
        }
    }

    func has(_ flag: String) -> Bool { switches.contains(flag) }

    func optional(_ flag: String) -> String? { values[flag] }

    func required(_ flag: String) throws -> String {
        guard let value = values[flag] else { throw UsageError("\(flag) is required") }
        return value
    }

    /// A non-negative integer, decimal or 0x-hex.
    func number(_ flag: String, what: String) throws -> UInt64 {
        try parseNumber(try required(flag), flag: flag, what: what)
    }

    func optionalNumber(_ flag: String, what: String) throws -> UInt64? {
        guard let text = values[flag] else { return nil }
        return try parseNumber(text, flag: flag, what: what)
    }

    private func parseNumber(_ text: String, flag: String, what: String) throws -> UInt64 {
        let value: UInt64?
        if text.hasPrefix("0x") || text.hasPrefix("0X") {
            value = UInt64(text.dropFirst(2), radix: 16)
        } else {
            value = UInt64(text)
        }
        guard let value else { throw UsageError("\(flag) must be \(what), found '\(text)'") }
        return value
    }
}
