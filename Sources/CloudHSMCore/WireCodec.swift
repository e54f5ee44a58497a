// Big-endian primitive encoding for the wire protocol. Decoding is a pure function over
// bytes: every read is bounds-checked and malformed input throws, never traps.

public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(String)
    case invalidValue(String)
    case trailingBytes(Int)
    case frameTooLarge(Int)
    case badMagic
    case unsupportedVersion(UInt8)
    case unknownOperation(UInt8)

    public var description: String {
        switch self {
        case .truncated(let what): return "truncated message: \(what) is missing"
        case .invalidValue(let what): return "invalid value: \(what)"
        case .trailingBytes(let n): return "\(n) unexpected bytes after the message"
        case .frameTooLarge(let n): return "frame of \(n) bytes exceeds the limit of \(Frame.maximumPayloadLength)"
        case .badMagic: return "not a CloudHSM protocol frame (bad magic)"
        case .unsupportedVersion(let v): return "unsupported protocol version \(v)"
        case .unknownOperation(let op): return "unknown operation 0x\(String(op, radix: 16))"
        }
    }
}

public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func write(_ value: UInt8) { bytes.append(value) }
    public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }
    public mutating func write(_ value: UInt16) { writeBigEndian(UInt64(value), width: 2) }
    public mutating func write(_ value: UInt32) { writeBigEndian(UInt64(value), width: 4) }
    public mutating func write(_ value: UInt64) { writeBigEndian(value, width: 8) }

    /// Length-prefixed (u32) bytes.
    public mutating func write(_ value: [UInt8]) {
        write(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    /// Length-prefixed UTF-8.
    public mutating func write(_ value: String) { write(Array(value.utf8)) }

    public mutating func writeOptional<T>(_ value: T?, _ body: (inout WireWriter, T) -> Void) {
        if let value {
            write(true)
            body(&self, value)
        } else {
            write(false)
        }
    }

    private mutating func writeBigEndian(_ value: UInt64, width: Int) {
        // A plain loop: the stride iterator costs a generic call per byte in debug builds.
        var shift = (width - 1) * 8
        while shift >= 0 {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
            shift -= 8
        }
    }
}

public struct WireReader: Sendable {
    private let bytes: [UInt8]
    private var offset: Int

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
    }

    public var remaining: Int { bytes.count - offset }

    public mutating func readUInt8(_ what: String) throws -> UInt8 {
        guard remaining >= 1 else { throw WireError.truncated(what) }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func readBool(_ what: String) throws -> Bool {
        switch try readUInt8(what) {
        case 0: return false
        case 1: return true
        default: throw WireError.invalidValue("\(what) is not a boolean")
        }
    }

    public mutating func readUInt16(_ what: String) throws -> UInt16 {
        UInt16(try readBigEndian(width: 2, what))
    }

    public mutating func readUInt32(_ what: String) throws -> UInt32 {
        UInt32(try readBigEndian(width: 4, what))
    }

    public mutating func readUInt64(_ what: String) throws -> UInt64 {
        try readBigEndian(width: 8, what)
    }

    public mutating func readBytes(_ what: String, maximum: Int = Frame.maximumPayloadLength) throws -> [UInt8] {
        // The field names of errors are built only when there is an error: this runs
        // several times per request on the hot path.
        guard remaining >= 4 else { throw WireError.truncated("\(what) length") }
        let count = Int(try readBigEndian(width: 4, what))
        guard count <= maximum else { throw WireError.invalidValue("\(what) is longer than \(maximum) bytes") }
        guard remaining >= count else { throw WireError.truncated(what) }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    public mutating func readString(_ what: String, maximum: Int = 4096) throws -> String {
        let raw = try readBytes(what, maximum: maximum)
        if raw.isEmpty { return "" }
        // Names, labels and passwords end up in C strings (SQLite, OpenSSL), where a NUL
        // would silently cut them short.
        guard !raw.contains(0) else { throw WireError.invalidValue("\(what) contains a NUL byte") }
        guard let string = String(validating: raw, as: UTF8.self) else {
            throw WireError.invalidValue("\(what) is not valid UTF-8")
        }
        return string
    }

    public mutating func readOptional<T>(_ what: String, _ body: (inout WireReader) throws -> T) throws -> T? {
        guard remaining >= 1 else { throw WireError.truncated("\(what) presence") }
        switch bytes[offset] {
        case 0:
            offset += 1
            return nil
        case 1:
            offset += 1
            return try body(&self)
        default:
            throw WireError.invalidValue("\(what) presence is not a boolean")
        }
    }

    public mutating func readEnum<E: RawRepresentable>(_ type: E.Type, _ what: String) throws -> E
    where E.RawValue == UInt32 {
        let raw = try readUInt32(what)
        guard let value = E(rawValue: raw) else { throw WireError.invalidValue("\(what) \(raw)") }
        return value
    }

    public mutating func readEnum<E: RawRepresentable>(_ type: E.Type, _ what: String) throws -> E
    where E.RawValue == UInt8 {
        let raw = try readUInt8(what)
        guard let value = E(rawValue: raw) else { throw WireError.invalidValue("\(what) \(raw)") }
        return value
    }

    /// Throws unless every byte was consumed.
    public func finish() throws {
        if remaining != 0 { throw WireError.trailingBytes(remaining) }
    }

    private mutating func readBigEndian(width: Int, _ what: String) throws -> UInt64 {
        guard remaining >= width else { throw WireError.truncated(what) }
        var value: UInt64 = 0
        for index in offset..<offset + width { value = value << 8 | UInt64(bytes[index]) }
        offset += width
        return value
    }
}
