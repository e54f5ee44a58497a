// Fuzz target `key_pem`: a fake PEM file as the provider reads it (the bytes as UTF-8 text,
// the CLOUDHSM KEY REFERENCE block found among whatever else the file holds, base64, DER).
// Whatever decodes must survive a round trip through both of our encodings unchanged.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKeyPEM(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: fuzzInput(data, size), as: UTF8.self)
    let present = KeyReference.isPresent(in: text)
    let reference: KeyReference
    do {
        reference = try KeyReference(pem: text)
    } catch let error as KeyReferenceError {
        expect(!error.description.isEmpty, "an empty error")
        if error == .notAKeyReference { expect(!present, "a present block was reported missing") }
        return 0
    } catch {
        unexpected(error)
    }
    expect(present, "a key reference decoded from text without its BEGIN line")
    let pem = reference.pemEncoded()
    expect(pem.split(separator: "\n").allSatisfy { $0.utf8.count <= 64 }, "PEM lines over 64 characters")
    do {
        let fromPEM = try KeyReference(pem: pem)
        let fromDER = try KeyReference(der: reference.derEncoded())
        expect(fromPEM == reference, "the PEM round trip changed \(reference) to \(fromPEM)")
        expect(fromDER == reference, "the DER round trip changed \(reference) to \(fromDER)")
    } catch {
        fail("our own encoding of \(reference) is refused: \(error)")
    }
    return 0
}
