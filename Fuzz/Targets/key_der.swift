// Fuzz target `key_der`: the fake PEM's DER structure as the provider's DER decoder gets it.
// DER has exactly one encoding per value, so whatever is accepted must be exactly what
// our encoder writes for the decoded reference.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKeyDER(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let der = fuzzInput(data, size)
    let reference: KeyReference
    do {
        reference = try KeyReference(der: der)
    } catch let error as KeyReferenceError {
        expect(!error.description.isEmpty, "an empty error")
        return 0
    } catch {
        unexpected(error)
    }
    expect(reference.derEncoded() == der, "accepted a non-DER (non-minimal) encoding of \(reference)")
    do {
        let fromPEM = try KeyReference(pem: reference.pemEncoded())
        expect(fromPEM == reference, "the PEM round trip changed \(reference) to \(fromPEM)")
    } catch {
        fail("our own PEM of \(reference) is refused: \(error)")
    }
    return 0
}
