// Fuzz target `peer_request`: a replication request as a node decodes it once the cluster
// key has opened its seal (so a node whose peer misbehaves, or a leaked cluster key, is
// the attacker here). Input: the operation byte, then the payload.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPeerRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard
        let (operation, payload, request) = decodeOperationAndPayload(
            fuzzInput(data, size), isKnownOperation: { PeerOperation(rawValue: $0) != nil },
            decode: PeerRequest.decode(operation:payload:))
    else { return 0 }
    expect(request.operation.rawValue == operation, "operation \(operation) decoded as \(request.operation)")
    expect(request.encodedPayload() == payload, "\(request) does not re-encode to its payload")
    return 0
}
