// Fuzz target `peer_request`: a replication request as a node decodes it once the cluster
// key has opened its seal (so a node whose peer misbehaves, or a leaked cluster key, is
// the attacker here). Input: the operation byte, then the payload.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPeerRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    guard let operation = bytes.first else { return 0 }
    let payload = Array(bytes.dropFirst())
    let request: PeerRequest
    do {
        request = try PeerRequest.decode(operation: operation, payload: payload)
    } catch let error as WireError {
        _ = error.description
        if PeerOperation(rawValue: operation) == nil {
            expect(error == .unknownOperation(operation), "unknown operation refused as \(error)")
        }
        return 0
    } catch {
        unexpected(error)
    }
    expect(request.operation.rawValue == operation, "operation \(operation) decoded as \(request.operation)")
    expect(request.encodedPayload() == payload, "\(request) does not re-encode to its payload")
    return 0
}
