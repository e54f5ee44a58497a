// Fuzz target `request`: a client's request as a node decodes it. Input: the frame's
// operation byte, then the payload. The encoding has one form per request, so whatever
// decodes must encode back to the very same bytes, and no field may exceed its limit.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard
        let (operation, payload, request) = decodeOperationAndPayload(
            fuzzInput(data, size), isKnownOperation: { Operation(rawValue: $0) != nil },
            decode: HSMRequest.decode(operation:payload:))
    else { return 0 }
    expect(request.operation.rawValue == operation, "operation \(operation) decoded as \(request.operation)")
    expect(request.encodedPayload() == payload, "\(request) does not re-encode to its payload")
    _ = request.isIdempotent
    checkLimits(request)
    return 0
}

/// The limits a node relies on: names and passwords fit the user table, data fits a key.
private func checkLimits(_ request: HSMRequest) {
    func text(_ value: String, _ limit: Int, _ what: String) {
        expect(value.utf8.count <= limit, "\(what) of \(value.utf8.count) bytes accepted")
        expect(!value.utf8.contains(0), "\(what) with a NUL accepted")
    }
    func data(_ value: [UInt8], _ limit: Int, _ what: String) {
        expect(value.count <= limit, "\(what) of \(value.count) bytes accepted")
    }
    switch request {
    case .login(_, let user, let password), .createUser(_, let user, let password):
        text(user, 64, "user name")
        text(password, 256, "password")
    case .changePassword(let user, let password):
        text(user, 64, "user name")
        text(password, 256, "password")
    case .deleteUser(let user):
        text(user, 64, "user name")
    case .generateSymmetricKey(_, _, let label, _, _), .generateRSAKeyPair(_, _, let label, _, _),
        .generateECKeyPair(_, let label, _, _):
        text(label, 256, "label")
    case .wrapHostKey(_, let keyData):
        data(keyData, 65536, "key data")
    case .unwrapKey(_, let wrappedKey, let label, _, _):
        data(wrappedKey, 65536, "wrapped key")
        text(label, 256, "label")
    case .findKeys(let filter):
        if let label = filter.label { text(label, 256, "label") }
    case .sign(_, _, let input):
        data(input, 1024, "data to sign")
    case .decrypt(_, let mechanism, let input):
        data(input, 1024, "data to decrypt")
        if case .oaep(_, _, let label) = mechanism { data(label, 1024, "OAEP label") }
    default:
        break
    }
}
