// The provider's objects as OpenSSL holds them: opaque pointers that keep a Swift object
// alive (contexts, key data) until OpenSSL frees them through the provider.

/// Passes a Swift object to OpenSSL as an opaque pointer that keeps it alive.
func retainedPointer<T: AnyObject>(_ object: T) -> UnsafeMutableRawPointer {
    Unmanaged.passRetained(object).toOpaque()
}

/// The object behind a pointer made by `retainedPointer`, without changing ownership.
func object<T: AnyObject>(_ pointer: UnsafeRawPointer?, as type: T.Type) -> T? {
    guard let pointer else { return nil }
    return Unmanaged<T>.fromOpaque(pointer).takeUnretainedValue()
}

/// The object behind a pointer OpenSSL passes back, or a named error when it passed none.
func provided<T: AnyObject>(_ pointer: UnsafeRawPointer?, as type: T.Type) throws -> T {
    guard let found = object(pointer, as: type) else {
        throw ProviderError(.invalidInput, "OpenSSL passed no \(type) to the CloudHSM provider")
    }
    return found
}

/// Releases an object passed to OpenSSL with `retainedPointer`.
func releasePointer<T: AnyObject>(_ pointer: UnsafeMutableRawPointer?, as type: T.Type) {
    guard let pointer else { return }
    Unmanaged<T>.fromOpaque(pointer).release()
}

/// The bytes OpenSSL passes as (pointer, length), copied.
func bytes(_ pointer: UnsafePointer<UInt8>?, _ count: Int) -> [UInt8] {
    guard let pointer, count > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: pointer, count: count))
}

/// Writes `result` to an output buffer OpenSSL passed (pointer, capacity, length).
func deliver(
    _ result: [UInt8], to output: UnsafeMutablePointer<UInt8>, capacity: Int, length: UnsafeMutablePointer<Int>?,
    what: String
) throws {
    guard result.count <= capacity else {
        throw ProviderError(
            .invalidInput, "\(what) is \(result.count) bytes; the output buffer holds \(capacity)")
    }
    output.update(from: result, count: result.count)
    length?.pointee = result.count
}
