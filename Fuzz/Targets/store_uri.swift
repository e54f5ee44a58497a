// Fuzz target `store_uri`: the `cloudhsm:` URI parser on any text, as OpenSSL hands it to
// the store loader's `open` (a C string: the bytes up to the first NUL; text that is not
// UTF-8 is refused before parsing, as `open` does). What parses must print in its canonical
// spelling, plain ASCII, and parse back to the same URI; what is refused must be an
// invalid-input error that names the URI and the forms, on one line, with the user's
// text escaped and cut short.

@testable import CloudHSMProvider

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStoreURI(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size).prefix { $0 != 0 }
    guard let text = String(validating: bytes, as: UTF8.self) else { return 0 }
    let uri: StoreURI
    do {
        uri = try StoreURI(parsing: text)
    } catch let error as ProviderError {
        expect(error.reason == .invalidInput, "refused as \(error.reason): \(error.message)")
        // Compared as bytes: the user's text may begin with a combining mark, which fuses
        // with the quote before it into one Character.
        expect(
            error.message.utf8.starts(with: "malformed cloudhsm: URI '".utf8),
            "a refusal without the URI: \(error.message)")
        expect(
            error.message.utf8.reversed().starts(with: "the forms are \(StoreURI.forms)".utf8.reversed()),
            "a refusal without the forms")
        expect(
            !error.message.unicodeScalars.contains { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) },
            "a control character reaches the message: \(error.message.debugDescription)")
        // The URI and a piece of it, each cut at 120 bytes, and fixed text around them.
        expect(error.message.utf8.count <= 1024, "a message of \(error.message.utf8.count) bytes")
        return 0
    } catch {
        unexpected(error)
    }
    if let label = uri.label {
        expect(!label.isEmpty && label.utf8.count <= StoreURI.maximumLabelBytes, "a label of \(label.utf8.count) bytes")
        expect(!label.utf8.contains(0), "a label with a NUL was accepted")
    }
    let canonical = uri.description
    expect(canonical.hasPrefix("cloudhsm:"), "canonical spelling \(canonical)")
    expect(
        canonical.utf8.allSatisfy { (0x21...0x7e).contains($0) },
        "the canonical spelling is not printable ASCII: \(canonical.debugDescription)")
    do {
        let again = try StoreURI(parsing: canonical)
        expect(again == uri, "\(canonical) parses as \(again), not \(uri)")
        expect(again.description == canonical, "the canonical spelling changed to \(again.description)")
    } catch {
        fail("the canonical spelling \(canonical) of \(text.debugDescription) is refused: \(error)")
    }
    return 0
}
