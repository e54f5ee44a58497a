// Dispatch and algorithm tables: what the provider hands OpenSSL, and how it reads what
// the core hands it. Every slot is typed by OpenSSL's own accessor for it
// (`OSSL_FUNC_signature_sign_init` and so on, from core_dispatch.h), so a function of the
// wrong signature does not compile; the one cast to OpenSSL's generic function pointer is
// in `DispatchTable.add`. Tables are allocated once and live for the whole process, as
// OpenSSL expects.

import COpenSSL

/// OpenSSL's generic function pointer, `void (*)(void)`.
typealias GenericFunction = @convention(c) () -> Void

/// One function slot of a dispatch table: its id and, through OpenSSL's accessor, the C
/// type a function in it has.
struct Slot<Function> {
    let id: Int32
    private let accessor: (UnsafePointer<OSSL_DISPATCH>?) -> Function?

    /// - Parameter accessor: OpenSSL's `OSSL_FUNC_<name>` for the slot; it fixes `Function`.
    init(_ id: Int32, _ accessor: @escaping (UnsafePointer<OSSL_DISPATCH>?) -> Function?) {
        self.id = id
        self.accessor = accessor
    }

    /// This slot's function in `table` (the core's table at init), typed by OpenSSL's
    /// accessor; nil when the table has none.
    func function(in table: UnsafePointer<OSSL_DISPATCH>?) -> Function? {
        var entry = table
        while let current = entry, current.pointee.function_id != 0 {
            if current.pointee.function_id == id { return accessor(current) }
            entry = current + 1
        }
        return nil
    }
}

/// A dispatch table under construction.
struct DispatchTable {
    private var entries: [OSSL_DISPATCH] = []

    init() {}

    /// Puts `function` in `slot`. `Function` is the C function type OpenSSL's accessor
    /// gives the slot, so only a function of exactly that signature is accepted.
    mutating func add<Function>(_ slot: Slot<Function>, _ function: Function) {
        // A @convention(c) function is one pointer; anything else (a Swift closure) is not
        // a C function and must never reach OpenSSL.
        precondition(MemoryLayout<Function>.size == MemoryLayout<GenericFunction>.size, "not a C function")
        // The module's one cast to OpenSSL's generic pointer, as OpenSSL's own tables do.
        entries.append(OSSL_DISPATCH(function_id: slot.id, function: unsafeBitCast(function, to: GenericFunction.self)))
    }

    /// Every entry of `other`, for a key type's table built on a shared one.
    mutating func add(contentsOf other: DispatchTable) {
        entries.append(contentsOf: other.entries)
    }

    /// The slot ids in the table, in order (for tests and traces).
    var slotIDs: [Int32] { entries.map(\.function_id) }

    /// The table as OpenSSL keeps it: allocated once, never freed, ending in a zero entry.
    func finished() -> UnsafePointer<OSSL_DISPATCH> {
        let table = UnsafeMutablePointer<OSSL_DISPATCH>.allocate(capacity: entries.count + 1)
        for (index, entry) in entries.enumerated() { table[index] = entry }
        table[entries.count] = OSSL_DISPATCH(function_id: 0, function: nil)
        return UnsafePointer(table)
    }
}

/// One row of an algorithm table (what query_operation answers).
struct AlgorithmEntry {
    let names: StaticString
    let properties: StaticString
    let implementation: UnsafePointer<OSSL_DISPATCH>
    let description: StaticString
}

/// An algorithm table, allocated once and never freed.
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

/// OSSL_CALLBACK: how OpenSSL's data callbacks (export, decoders, key generation) arrive.
typealias DataCallback = @convention(c) (UnsafePointer<OSSL_PARAM>?, UnsafeMutableRawPointer?) -> Int32

/// OSSL_PASSPHRASE_CALLBACK, which decoders and encoders receive (ours never ask for one:
/// a key reference holds no secret).
typealias PassphraseCallback =
    @convention(c) (
        UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>?, UnsafePointer<OSSL_PARAM>?,
        UnsafeMutableRawPointer?
    ) -> Int32
