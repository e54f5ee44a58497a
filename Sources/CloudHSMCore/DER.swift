// The small subset of DER that the fake PEM format needs: SEQUENCE, INTEGER (non-negative),
// UTF8String, and raw elements kept as their encoded bytes (SubjectPublicKeyInfo).

enum DERTag: UInt8 {
    case integer = 0x02
    case utf8String = 0x0c
    case sequence = 0x30
}

struct DERError: Error, Equatable, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

enum DER {
    static func encodeLength(_ length: Int) -> [UInt8] {
        if length < 0x80 { return [UInt8(length)] }
        var bytes: [UInt8] = []
        var value = length
        while value > 0 {
            bytes.insert(UInt8(value & 0xff), at: 0)
            value >>= 8
        }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    static func element(_ tag: DERTag, _ content: [UInt8]) -> [UInt8] {
        [tag.rawValue] + encodeLength(content.count) + content
    }

    static func integer(_ value: UInt64) -> [UInt8] {
        var content: [UInt8] = []
        var v = value
        repeat {
            content.insert(UInt8(v & 0xff), at: 0)
            v >>= 8
        } while v > 0
        if content[0] & 0x80 != 0 { content.insert(0, at: 0) }
        return element(.integer, content)
    }

    static func utf8String(_ value: String) -> [UInt8] { element(.utf8String, Array(value.utf8)) }

    static func sequence(_ parts: [[UInt8]]) -> [UInt8] { element(.sequence, parts.flatMap { $0 }) }
}

/// Reads DER elements from a byte slice; every length is checked against what is there.
struct DERReader {
    private let bytes: [UInt8]
    private var offset: Int
    private let end: Int

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
        self.end = bytes.count
    }

    private init(bytes: [UInt8], offset: Int, end: Int) {
        self.bytes = bytes
        self.offset = offset
        self.end = end
    }

    var isAtEnd: Bool { offset >= end }

    func peekTag() -> UInt8? { offset < end ? bytes[offset] : nil }

    /// Reads one element; returns its tag, content range and the whole encoding.
    mutating func readElement(_ what: String) throws -> (tag: UInt8, content: Range<Int>, encoded: [UInt8]) {
        let start = offset
        guard offset < end else { throw DERError(reason: "\(what) is missing") }
        let tag = bytes[offset]
        offset += 1
        guard offset < end else { throw DERError(reason: "\(what) has no length") }
        var length = Int(bytes[offset])
        offset += 1
        if length & 0x80 != 0 {
            let count = length & 0x7f
            guard count >= 1, count <= 4, offset + count <= end else {
                throw DERError(reason: "\(what) has an invalid length")
            }
            // DER has one encoding per length: no leading zero bytes, no long form below 0x80.
            guard bytes[offset] != 0 else { throw DERError(reason: "\(what) has a non-minimal length") }
            length = 0
            for _ in 0..<count {
                length = length << 8 | Int(bytes[offset])
                offset += 1
            }
            guard length >= 0x80 else { throw DERError(reason: "\(what) has a non-minimal length") }
        }
        guard length <= end - offset else { throw DERError(reason: "\(what) is truncated") }
        let content = offset..<offset + length
        offset += length
        return (tag, content, Array(bytes[start..<offset]))
    }

    mutating func readSequence(_ what: String) throws -> DERReader {
        let element = try readElement(what)
        guard element.tag == DERTag.sequence.rawValue else { throw DERError(reason: "\(what) is not a SEQUENCE") }
        return DERReader(bytes: bytes, offset: element.content.lowerBound, end: element.content.upperBound)
    }

    mutating func readUnsignedInteger(_ what: String) throws -> UInt64 {
        let element = try readElement(what)
        guard element.tag == DERTag.integer.rawValue else { throw DERError(reason: "\(what) is not an INTEGER") }
        var content = Array(bytes[element.content])
        guard !content.isEmpty else { throw DERError(reason: "\(what) is empty") }
        guard content[0] & 0x80 == 0 else { throw DERError(reason: "\(what) is negative") }
        if content.count > 1, content[0] == 0 {
            // A leading zero only where the next byte would otherwise read as negative.
            guard content[1] & 0x80 != 0 else { throw DERError(reason: "\(what) has a non-minimal encoding") }
            content.removeFirst()
        }
        guard content.count <= 8 else { throw DERError(reason: "\(what) is too large") }
        return content.reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func readUTF8String(_ what: String) throws -> String {
        let element = try readElement(what)
        guard element.tag == DERTag.utf8String.rawValue else { throw DERError(reason: "\(what) is not a UTF8String") }
        guard let string = String(validating: bytes[element.content], as: UTF8.self) else {
            throw DERError(reason: "\(what) is not valid UTF-8")
        }
        return string
    }

    /// Reads a SEQUENCE and returns its complete encoding without looking inside.
    mutating func readRawSequence(_ what: String) throws -> [UInt8] {
        let element = try readElement(what)
        guard element.tag == DERTag.sequence.rawValue else { throw DERError(reason: "\(what) is not a SEQUENCE") }
        return element.encoded
    }
}
