// OSSL_PARAM at the provider's boundary: reading what OpenSSL passes in, answering what
// it asks for, the static descriptor tables, and parameter values the provider builds
// (through OpenSSLKit's ParamBuilder). Part of the OpenSSL boundary: every read and write
// either succeeds or throws an error that names the parameter.

import COpenSSL
import OpenSSLKit

/// A C string that lives for the whole process: OpenSSL keeps the pointers we return.
func cString(_ string: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(string.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Reads the parameters OpenSSL passes in. Absent parameters read as nil; present ones
/// that cannot be read as asked throw an error naming them.
struct ParamReader {
    let params: UnsafePointer<OSSL_PARAM>?

    init(_ params: UnsafePointer<OSSL_PARAM>?) { self.params = params }

    func locate(_ key: StaticString) -> UnsafePointer<OSSL_PARAM>? {
        guard let params else { return nil }
        return OSSL_PARAM_locate_const(params, cString(key))
    }

    func contains(_ key: StaticString) -> Bool { locate(key) != nil }

    /// True when the parameter is a string (`pad-mode` and `saltlen` come as words or numbers).
    func isString(_ key: StaticString) -> Bool {
        guard let type = locate(key)?.pointee.data_type else { return false }
        return type == UInt32(OSSL_PARAM_UTF8_STRING) || type == UInt32(OSSL_PARAM_UTF8_PTR)
    }

    /// Every key present, in order.
    var keys: [String] {
        guard var entry = params else { return [] }
        var keys: [String] = []
        while let key = entry.pointee.key {
            keys.append(String(cString: key))
            entry += 1
        }
        return keys
    }

    func int(_ key: StaticString) throws -> Int? {
        guard let p = locate(key) else { return nil }
        var value: Int64 = 0
        guard OSSL_PARAM_get_int64(p, &value) == 1 else { throw Self.unreadable(key, "an integer") }
        return Int(value)
    }

    func unsigned(_ key: StaticString) throws -> UInt64? {
        guard let p = locate(key) else { return nil }
        var value: UInt64 = 0
        guard OSSL_PARAM_get_uint64(p, &value) == 1 else { throw Self.unreadable(key, "an unsigned integer") }
        return value
    }

    func string(_ key: StaticString) throws -> String? {
        guard let p = locate(key) else { return nil }
        var pointer: UnsafePointer<CChar>? = nil
        guard OSSL_PARAM_get_utf8_string_ptr(p, &pointer) == 1, let pointer else {
            throw Self.unreadable(key, "a string")
        }
        return String(cString: pointer)
    }

    func octets(_ key: StaticString) throws -> [UInt8]? {
        guard let p = locate(key) else { return nil }
        var pointer: UnsafeRawPointer? = nil
        var length = 0
        guard OSSL_PARAM_get_octet_string_ptr(p, &pointer, &length) == 1 else {
            throw Self.unreadable(key, "an octet string")
        }
        guard let pointer, length > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: length))
    }

    /// A BIGNUM parameter as unsigned big-endian bytes.
    func bigNumber(_ key: StaticString) throws -> [UInt8]? {
        guard let p = locate(key) else { return nil }
        guard let value = bigEndianInteger(of: p) else { throw Self.unreadable(key, "a non-negative integer") }
        return value
    }

    private static func unreadable(_ key: StaticString, _ kind: String) -> ProviderError {
        ProviderError(.invalidInput, "parameter '\(key)' must be \(kind)")
    }
}

/// Answers the parameters OpenSSL asks for; each setter does nothing for a parameter that
/// was not asked for, and throws an error naming the one it cannot fill.
struct ParamWriter {
    let params: UnsafeMutablePointer<OSSL_PARAM>?

    init(_ params: UnsafeMutablePointer<OSSL_PARAM>?) { self.params = params }

    func locate(_ key: StaticString) -> UnsafeMutablePointer<OSSL_PARAM>? {
        guard let params else { return nil }
        return OSSL_PARAM_locate(params, cString(key))
    }

    func isRequested(_ key: StaticString) -> Bool { locate(key) != nil }

    /// True when the caller asks for the parameter as an integer (`pad-mode`, `saltlen`).
    func wantsInteger(_ key: StaticString) -> Bool {
        locate(key)?.pointee.data_type == UInt32(OSSL_PARAM_INTEGER)
    }

    func set(_ key: StaticString, int value: Int) throws {
        guard let p = locate(key) else { return }
        try check(key, OSSL_PARAM_set_int64(p, Int64(value)))
    }

    func set(_ key: StaticString, unsigned value: UInt64) throws {
        guard let p = locate(key) else { return }
        try check(key, OSSL_PARAM_set_uint64(p, value))
    }

    /// A constant string: as a pointer when the caller asks for one (it stays valid).
    func set(_ key: StaticString, staticString value: StaticString) throws {
        guard let p = locate(key) else { return }
        if p.pointee.data_type == UInt32(OSSL_PARAM_UTF8_PTR) {
            try check(key, OSSL_PARAM_set_utf8_ptr(p, cString(value)))
        } else {
            try check(key, OSSL_PARAM_set_utf8_string(p, cString(value)))
        }
    }

    /// A string copied into the caller's buffer.
    func set(_ key: StaticString, string value: String) throws {
        guard let p = locate(key) else { return }
        try check(key, OSSL_PARAM_set_utf8_string(p, value))
    }

    /// Bytes: copied, or, when the caller asks for a pointer, `storage`, which the caller
    /// may read for as long as the object that owns it lives.
    func set(_ key: StaticString, octets value: [UInt8], storage: UnsafeRawBufferPointer? = nil) throws {
        guard let p = locate(key) else { return }
        if p.pointee.data_type == UInt32(OSSL_PARAM_OCTET_PTR) {
            try check(key, OSSL_PARAM_set_octet_ptr(p, storage?.baseAddress, storage?.count ?? 0))
        } else {
            try check(key, value.withUnsafeBytes { OSSL_PARAM_set_octet_string(p, $0.baseAddress, $0.count) })
        }
    }

    /// A BIGNUM parameter from unsigned big-endian bytes.
    func set(_ key: StaticString, bigEndian value: [UInt8]) throws {
        guard let p = locate(key) else { return }
        try check(key, setBigEndianInteger(value, in: p) ? 1 : 0)
    }

    private func check(_ key: StaticString, _ result: Int32) throws {
        guard result == 1 else {
            throw ProviderError(
                .invalidInput,
                "cannot answer parameter '\(key)': the caller's parameter has another type or too "
                    + "small a buffer")
        }
    }
}

/// A parameter descriptor table (gettable, settable, import and export types), allocated
/// once and never freed.
func paramTable(_ entries: [(StaticString, Int32)]) -> UnsafePointer<OSSL_PARAM> {
    let table = UnsafeMutablePointer<OSSL_PARAM>.allocate(capacity: entries.count + 1)
    for (index, entry) in entries.enumerated() {
        table[index] = OSSL_PARAM(
            key: cString(entry.0), data_type: UInt32(entry.1), data: nil, data_size: 0,
            return_size: Int.max)  // OSSL_PARAM_UNMODIFIED
    }
    table[entries.count] = OSSL_PARAM(key: nil, data_type: 0, data: nil, data_size: 0, return_size: 0)
    return UnsafePointer(table)
}

/// A parameter the provider builds: key material it exports, settings it hands to a
/// default-provider operation.
enum ParamValue: Equatable, CustomStringConvertible {
    case int(StaticString, Int)
    case string(StaticString, String)
    case bigNumber(StaticString, [UInt8])
    /// Bytes: an EC public point ("pub", "encoded-pub-key").
    case octets(StaticString, [UInt8])

    var key: StaticString {
        switch self {
        case .int(let key, _), .string(let key, _), .bigNumber(let key, _), .octets(let key, _): return key
        }
    }

    static func == (a: ParamValue, b: ParamValue) -> Bool {
        switch (a, b) {
        case (.int(let k1, let v1), .int(let k2, let v2)): return k1.description == k2.description && v1 == v2
        case (.string(let k1, let v1), .string(let k2, let v2)): return k1.description == k2.description && v1 == v2
        case (.bigNumber(let k1, let v1), .bigNumber(let k2, let v2)),
            (.octets(let k1, let v1), .octets(let k2, let v2)):
            return k1.description == k2.description && v1 == v2
        default: return false
        }
    }

    var description: String {
        switch self {
        case .int(let key, let value): return "\(key)=\(value)"
        case .string(let key, let value): return "\(key)=\(value)"
        case .bigNumber(let key, let value), .octets(let key, let value): return "\(key)=<\(value.count) bytes>"
        }
    }
}

/// An OSSL_PARAM list holding copies of `values`.
func parameterList(_ values: [ParamValue]) throws -> ParamList {
    do {
        let builder = try ParamBuilder()
        for value in values {
            switch value {
            case .int(let key, let number):
                guard let narrow = Int32(exactly: number) else {
                    throw ProviderError(.invalidInput, "parameter '\(key)' value \(number) does not fit an int")
                }
                try builder.push(key, int: narrow)
            case .string(let key, let text): try builder.push(key, string: text)
            case .bigNumber(let key, let bytes): try builder.push(key, bigEndian: bytes)
            case .octets(let key, let bytes): try builder.push(key, octets: bytes)
            }
        }
        return try builder.build()
    } catch let error as ProviderError {
        throw error
    } catch {
        throw ProviderError(error, doing: "building parameters \(values)")
    }
}
