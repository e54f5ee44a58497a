// Fuzz target `response`: a node's answer as the client decodes it. Input: one byte that
// names the operation asked (its raw value, or any byte taken modulo the number of
// operations), then the payload. Like requests, responses have one encoding each.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponse(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    guard let first = bytes.first else { return 0 }
    let operation = Operation(rawValue: first) ?? Operation.allCases[Int(first) % Operation.allCases.count]
    let payload = Array(bytes.dropFirst())
    let response: HSMResponse
    do {
        response = try HSMResponse.decode(operation: operation, payload: payload)
    } catch let error as WireError {
        _ = error.description
        return 0
    } catch {
        unexpected(error)
    }
    expect(response.encodedPayload() == payload, "\(response) does not re-encode to its payload")
    expect(response.detail.utf8.count <= 4096 && !response.detail.utf8.contains(0), "detail over its limit")
    _ = response.code.description
    do {
        let body = try response.get()
        expect(response.code.isSuccess, "failure \(response.code) gave a body")
        expect(body == response.body, "get() changed the body")
    } catch let error as HSMError {
        expect(!response.code.isSuccess, "success threw")
        expect(error.code == response.code && error.detail == response.detail, "get() threw \(error)")
        _ = error.description
    } catch {
        unexpected(error)
    }
    return 0
}
