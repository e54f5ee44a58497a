// Shared by every fuzz target (compiled into each): turning libFuzzer's buffer into
// bytes, invariant checks that stop the run with a message when they fail, and the
// decoding step the two request targets share.

import CloudHSMCore

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

/// Decodes an input laid out as an operation byte, then a payload (requests of either
/// protocol): nil when the decoder refused it with a `WireError`, as it must for what it
/// cannot read, and then an unknown operation must have been refused as one.
func decodeOperationAndPayload<Message>(
    _ bytes: [UInt8], isKnownOperation: (UInt8) -> Bool,
    decode: (_ operation: UInt8, _ payload: [UInt8]) throws -> Message
) -> (operation: UInt8, payload: [UInt8], message: Message)? {
    guard let operation = bytes.first else { return nil }
    let payload = Array(bytes.dropFirst())
    do {
        return (operation, payload, try decode(operation, payload))
    } catch let error as WireError {
        _ = error.description
        if !isKnownOperation(operation) {
            expect(error == .unknownOperation(operation), "unknown operation refused as \(error)")
        }
        return nil
    } catch {
        unexpected(error)
    }
}
