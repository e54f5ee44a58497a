// Shared by every fuzz target (compiled into each): turning libFuzzer's buffer into
// bytes, and an invariant check that stops the run with a message when it fails.

/// The fuzzer's input as an array, the type every decoder takes.
func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// Traps when an invariant does not hold: libFuzzer reports a trap as a crash and saves
/// the input, so a broken invariant is found, kept and reproduced like a crash.
func expect(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, file: StaticString = #file,
    line: UInt = #line
) {
    if !condition() { fatalError("invariant broken: \(message())", file: file, line: line) }
}

func fail(_ message: String, file: StaticString = #file, line: UInt = #line) -> Never {
    fatalError("invariant broken: \(message)", file: file, line: line)
}

/// For errors a decoder must never throw: they would reach a client as a crash-like surprise.
func unexpected(_ error: Error, file: StaticString = #file, line: UInt = #line) -> Never {
    fatalError("unexpected error type \(type(of: error)): \(error)", file: file, line: line)
}
