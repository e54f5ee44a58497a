// Fuzz target `peer_response`: a peer's answer to a replication request. Input: one byte
// that names the request (raw value, or any byte modulo the number of peer operations),
// then the payload. An inventory is a map, so repeated entries collapse and the encoding
// sorts them: there the check is that a second round trip changes nothing.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPeerResponse(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    guard let first = bytes.first else { return 0 }
    let operation =
        PeerOperation(rawValue: first) ?? PeerOperation.allCases[Int(first) % PeerOperation.allCases.count]
    let payload = Array(bytes.dropFirst())
    let response: PeerResponse
    do {
        response = try PeerResponse.decode(operation: operation, payload: payload)
    } catch let error as WireError {
        _ = error.description
        return 0
    } catch {
        unexpected(error)
    }
    let encoded = response.encodedPayload()
    if case .inventory = response.body {
        expect(encoded.count <= payload.count, "an inventory grew when re-encoded")
    } else {
        expect(encoded == payload, "\(response) does not re-encode to its payload")
    }
    do {
        let again = try PeerResponse.decode(operation: operation, payload: encoded)
        expect(again == response, "a re-encoded \(response) decodes as \(again)")
        expect(again.encodedPayload() == encoded, "a second round trip changed the encoding")
    } catch {
        fail("the re-encoding of \(response) is refused: \(error)")
    }
    return 0
}
