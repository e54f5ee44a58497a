// Building OpenSSL's dispatch and algorithm tables from Swift functions. The tables are
// allocated once and live for the whole process, as OpenSSL expects.

import COpenSSL

typealias GenericFunction = @convention(c) () -> Void

/// OSSL_CALLBACK. Declared here: the imported C typedef (a function type, not a pointer
/// type) does not behave as a plain C function pointer in Swift.
typealias DataCallback = @convention(c) (UnsafePointer<OSSL_PARAM>?, UnsafeMutableRawPointer?) -> Int32

/// One entry of a dispatch table: a function id and a C function of any signature.
///
/// Built with `DispatchEntry(id, unsafeBitCast(function, to: GenericFunction.self))` at the
/// call site: passing a C function pointer through a generic parameter makes Swift
/// re-abstract it into something that is no longer a plain C function pointer.
struct DispatchEntry {
    let id: Int32
    let function: GenericFunction

    init(_ id: Int32, _ function: GenericFunction) {
        self.id = id
        self.function = function
    }
}

func dispatchTable(_ entries: [DispatchEntry]) -> UnsafePointer<OSSL_DISPATCH> {
    let table = UnsafeMutablePointer<OSSL_DISPATCH>.allocate(capacity: entries.count + 1)
    for (index, entry) in entries.enumerated() {
        table[index] = OSSL_DISPATCH(function_id: entry.id, function: entry.function)
    }
    table[entries.count] = OSSL_DISPATCH(function_id: 0, function: nil)
    return UnsafePointer(table)
}

struct AlgorithmEntry {
    let names: StaticString
    let properties: StaticString
    let implementation: UnsafePointer<OSSL_DISPATCH>
    let description: StaticString
}

func algorithmTable(_ entries: [AlgorithmEntry]) -> UnsafePointer<OSSL_ALGORITHM> {
    let table = UnsafeMutablePointer<OSSL_ALGORITHM>.allocate(capacity: entries.count + 1)
    for (index, entry) in entries.enumerated() {
        table[index] = OSSL_ALGORITHM(
            algorithm_names: cString(entry.names), property_definition: cString(entry.properties),
            implementation: entry.implementation, algorithm_description: cString(entry.description))
    }
    table[entries.count] = OSSL_ALGORITHM(
        algorithm_names: nil, property_definition: nil, implementation: nil, algorithm_description: nil)
    return UnsafePointer(table)
}

/// Passes a Swift object to OpenSSL as an opaque pointer that keeps it alive.
func retainedPointer<T: AnyObject>(_ object: T) -> UnsafeMutableRawPointer {
    Unmanaged.passRetained(object).toOpaque()
}

/// The object behind a pointer made by `retainedPointer`, without changing ownership.
func object<T: AnyObject>(_ pointer: UnsafeMutableRawPointer?, as type: T.Type) -> T? {
    guard let pointer else { return nil }
    return Unmanaged<T>.fromOpaque(pointer).takeUnretainedValue()
}

/// Releases an object passed to OpenSSL with `retainedPointer`.
func releasePointer<T: AnyObject>(_ pointer: UnsafeMutableRawPointer?, as type: T.Type) {
    guard let pointer else { return }
    Unmanaged<T>.fromOpaque(pointer).release()
}
