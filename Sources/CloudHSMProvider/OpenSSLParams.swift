// OSSL_PARAM reading and writing, and the static parameter tables the provider hands to
// OpenSSL. Part of the provider's OpenSSL boundary: the unsafe pointer work is here.

import COpenSSL

/// A C string that lives for the whole process: OpenSSL keeps the pointers we return.
func cString(_ string: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(string.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Reads the parameters OpenSSL passes in.
struct ParamReader {
    let params: UnsafePointer<OSSL_PARAM>?

    func locate(_ key: StaticString) -> UnsafePointer<OSSL_PARAM>? {
        guard let params else { return nil }
        return OSSL_PARAM_locate_const(params, cString(key))
    }

    func contains(_ key: StaticString) -> Bool { locate(key) != nil }

    /// The parameter's data type, to tell an integer `pad-mode` from a string one.
    func dataType(_ key: StaticString) -> UInt32? { locate(key)?.pointee.data_type }

    func int(_ key: StaticString) -> Int? {
        guard let p = locate(key) else { return nil }
        var value: Int64 = 0
        return OSSL_PARAM_get_int64(p, &value) == 1 ? Int(value) : nil
    }

    func uint(_ key: StaticString) -> UInt? {
        guard let p = locate(key) else { return nil }
        var value: UInt64 = 0
        return OSSL_PARAM_get_uint64(p, &value) == 1 ? UInt(value) : nil
    }

    func string(_ key: StaticString) -> String? {
        guard let p = locate(key) else { return nil }
        var pointer: UnsafePointer<CChar>?
        if OSSL_PARAM_get_utf8_string_ptr(p, &pointer) == 1, let pointer { return String(cString: pointer) }
        return nil
    }

    func octets(_ key: StaticString) -> [UInt8]? {
        guard let p = locate(key) else { return nil }
        var pointer: UnsafeRawPointer?
        var length = 0
        guard OSSL_PARAM_get_octet_string_ptr(p, &pointer, &length) == 1 else { return nil }
        guard let pointer, length > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: length))
    }

    /// A BIGNUM parameter as big-endian bytes.
    func bigNumber(_ key: StaticString) -> [UInt8]? {
        guard let p = locate(key) else { return nil }
        var bn: OpaquePointer?
        guard OSSL_PARAM_get_BN(p, &bn) == 1, let bn else { return nil }
        defer { BN_free(bn) }
        var bytes = [UInt8](repeating: 0, count: Int((BN_num_bits(bn) + 7) / 8))
        _ = BN_bn2bin(bn, &bytes)
        return bytes
    }
}

/// Answers the parameters OpenSSL asks for; each setter is a no-op when not asked.
struct ParamWriter {
    let params: UnsafeMutablePointer<OSSL_PARAM>?

    func locate(_ key: StaticString) -> UnsafeMutablePointer<OSSL_PARAM>? {
        guard let params else { return nil }
        return OSSL_PARAM_locate(params, cString(key))
    }

    func isRequested(_ key: StaticString) -> Bool { locate(key) != nil }

    @discardableResult
    func set(_ key: StaticString, int value: Int) -> Bool {
        guard let p = locate(key) else { return true }
        return OSSL_PARAM_set_int64(p, Int64(value)) == 1
    }

    @discardableResult
    func set(_ key: StaticString, uint value: UInt) -> Bool {
        guard let p = locate(key) else { return true }
        return OSSL_PARAM_set_uint64(p, UInt64(value)) == 1
    }

    /// Sets a constant string; the pointer stays valid because the string is static.
    @discardableResult
    func set(_ key: StaticString, staticString value: StaticString) -> Bool {
        guard let p = locate(key) else { return true }
        if p.pointee.data_type == UInt32(OSSL_PARAM_UTF8_PTR) {
            return OSSL_PARAM_set_utf8_ptr(p, cString(value)) == 1
        }
        return OSSL_PARAM_set_utf8_string(p, cString(value)) == 1
    }

    /// Sets a string by copying it into the caller's buffer.
    @discardableResult
    func set(_ key: StaticString, string value: String) -> Bool {
        guard let p = locate(key) else { return true }
        return OSSL_PARAM_set_utf8_string(p, value) == 1
    }

    @discardableResult
    func set(_ key: StaticString, octets value: [UInt8]) -> Bool {
        guard let p = locate(key) else { return true }
        return value.withUnsafeBytes { OSSL_PARAM_set_octet_string(p, $0.baseAddress, $0.count) == 1 }
    }

    /// Sets a BIGNUM parameter from big-endian bytes.
    @discardableResult
    func set(_ key: StaticString, bigEndian value: [UInt8]) -> Bool {
        guard let p = locate(key) else { return true }
        guard let bn = BN_bin2bn(value, Int32(value.count), nil) else { return false }
        defer { BN_free(bn) }
        return OSSL_PARAM_set_BN(p, bn) == 1
    }
}

/// A parameter descriptor table, allocated once and never freed.
func paramTable(_ entries: [(StaticString, Int32)]) -> UnsafePointer<OSSL_PARAM> {
    let table = UnsafeMutablePointer<OSSL_PARAM>.allocate(capacity: entries.count + 1)
    for (index, entry) in entries.enumerated() {
        table[index] = OSSL_PARAM(
            key: cString(entry.0), data_type: UInt32(entry.1), data: nil, data_size: 0,
            return_size: -1)  // OSSL_PARAM_UNMODIFIED, SIZE_MAX
    }
    table[entries.count] = OSSL_PARAM(key: nil, data_type: 0, data: nil, data_size: 0, return_size: 0)
    return UnsafePointer(table)
}

/// Calls `body` with a parameter array built from `entries`; the array and everything it
/// points to stay valid until `body` returns.
func withParams<R>(_ entries: [ParamValue], _ body: (UnsafeMutablePointer<OSSL_PARAM>) -> R) -> R {
    var storage: [UnsafeMutableRawPointer] = []
    defer { storage.forEach { $0.deallocate() } }
    var params: [OSSL_PARAM] = []
    for entry in entries {
        switch entry {
        case .int(let key, let value):
            let slot = UnsafeMutableRawPointer.allocate(byteCount: 4, alignment: 4)
            slot.storeBytes(of: Int32(value), as: Int32.self)
            storage.append(slot)
            params.append(OSSL_PARAM_construct_int(cString(key), slot.assumingMemoryBound(to: Int32.self)))
        case .uint(let key, let value):
            let slot = UnsafeMutableRawPointer.allocate(byteCount: 4, alignment: 4)
            slot.storeBytes(of: UInt32(value), as: UInt32.self)
            storage.append(slot)
            params.append(OSSL_PARAM_construct_uint(cString(key), slot.assumingMemoryBound(to: UInt32.self)))
        case .string(let key, let value):
            let bytes = Array(value.utf8CString)
            let slot = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 1)
            bytes.withUnsafeBytes { slot.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            storage.append(slot)
            params.append(
                OSSL_PARAM_construct_utf8_string(cString(key), slot.assumingMemoryBound(to: CChar.self), 0))
        case .octets(let key, let value):
            let slot = UnsafeMutableRawPointer.allocate(byteCount: max(value.count, 1), alignment: 1)
            value.withUnsafeBytes {
                if let base = $0.baseAddress { slot.copyMemory(from: base, byteCount: value.count) }
            }
            storage.append(slot)
            params.append(OSSL_PARAM_construct_octet_string(cString(key), slot, value.count))
        }
    }
    params.append(OSSL_PARAM_construct_end())
    return params.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}

enum ParamValue {
    case int(StaticString, Int)
    case uint(StaticString, UInt)
    case string(StaticString, String)
    case octets(StaticString, [UInt8])
}
