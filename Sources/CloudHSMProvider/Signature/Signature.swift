// The signature functions every key type shares, in the order the core calls them; each
// is a few lines from OpenSSL's arguments to SignatureContext and back. A key type's
// signature file (RSASignature.swift) adds newctx and its parameter tables and builds
// its table on `sharedTable`.

import COpenSSL

enum Signature {
    /// newctx for a scheme.
    static func newContext(_ scheme: any SignatureScheme, properties: UnsafePointer<CChar>?)
        -> UnsafeMutableRawPointer?
    {
        retainedPointer(SignatureContext(scheme: scheme, properties: properties.map { String(cString: $0) }))
    }

    /// The functions every signature table shares.
    static var sharedTable: DispatchTable {
        var table = DispatchTable()
        table.add(SignatureSlot.freeContext, signatureFreeContext)
        table.add(SignatureSlot.duplicateContext, signatureDuplicateContext)
        table.add(SignatureSlot.signInit, signatureSignInit)
        table.add(SignatureSlot.sign, signatureSign)
        table.add(SignatureSlot.verifyInit, signatureVerifyInit)
        table.add(SignatureSlot.verify, signatureVerify)
        table.add(SignatureSlot.verifyRecoverInit, signatureVerifyRecoverInit)
        table.add(SignatureSlot.verifyRecover, signatureVerifyRecover)
        table.add(SignatureSlot.digestSignInit, signatureDigestSignInit)
        table.add(SignatureSlot.digestSignUpdate, signatureDigestUpdate)
        table.add(SignatureSlot.digestSignFinal, signatureDigestSignFinal)
        table.add(SignatureSlot.digestSign, signatureDigestSign)
        table.add(SignatureSlot.digestVerifyInit, signatureDigestVerifyInit)
        table.add(SignatureSlot.digestVerifyUpdate, signatureDigestUpdate)
        table.add(SignatureSlot.digestVerifyFinal, signatureDigestVerifyFinal)
        table.add(SignatureSlot.getContextParams, signatureGetContextParams)
        table.add(SignatureSlot.setContextParams, signatureSetContextParams)
        table.add(SignatureSlot.getDigestParams, signatureGetDigestParams)
        table.add(SignatureSlot.gettableDigestParams, signatureGettableDigestParams)
        table.add(SignatureSlot.setDigestParams, signatureSetDigestParams)
        table.add(SignatureSlot.settableDigestParams, signatureSettableDigestParams)
        return table
    }
}

private func context(_ pointer: UnsafeMutableRawPointer?) throws -> SignatureContext {
    try provided(pointer, as: SignatureContext.self)
}

private func buffer(_ pointer: UnsafePointer<UInt8>?, _ count: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: count > 0 ? pointer : nil, count: pointer == nil ? 0 : count)
}

private func signatureFreeContext(_ pointer: UnsafeMutableRawPointer?) {
    releasePointer(pointer, as: SignatureContext.self)
}

/// Mandatory in 3.0: EVP_DigestSignFinal duplicates the context before finishing.
private func signatureDuplicateContext(_ pointer: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    reportingResult("duplicating a signature context") { retainedPointer(try context(pointer).copy()) }
}

// MARK: - Sign (pre-hashed: EVP_PKEY_sign, pkeyutl -sign)

private func signatureSignInit(
    _ pointer: UnsafeMutableRawPointer?, _ key: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting a signature") {
        try context(pointer).beginSigning(
            key: key, digestName: nil, isDigestOperation: false, params: ParamReader(params))
    }
}

private func signatureSign(
    _ pointer: UnsafeMutableRawPointer?, _ signature: UnsafeMutablePointer<UInt8>?,
    _ signatureLength: UnsafeMutablePointer<Int>?, _ capacity: Int, _ input: UnsafePointer<UInt8>?, _ inputLength: Int
) -> Int32 {
    reportingStatus("signing") {
        let context = try context(pointer)
        try answer(context, signature, signatureLength, capacity) { try context.sign(bytes(input, inputLength)) }
    }
}

/// The size query (no output buffer) or the signature `make` produces, checked against
/// the buffer before anything is sent to the HSM.
private func answer(
    _ context: SignatureContext, _ signature: UnsafeMutablePointer<UInt8>?,
    _ signatureLength: UnsafeMutablePointer<Int>?,
    _ capacity: Int, _ make: () throws -> [UInt8]
) throws {
    guard let length = context.signatureLength else {
        throw ProviderError(.invalidInput, "this signature context has no key")
    }
    guard let signature else {
        signatureLength?.pointee = length
        return
    }
    guard capacity >= length else {
        throw ProviderError(.invalidInput, "signature buffer of \(capacity) bytes is smaller than \(length)")
    }
    try deliver(make(), to: signature, capacity: capacity, length: signatureLength, what: "the signature")
}

// MARK: - Verify (public key, default provider)

private func signatureVerifyInit(
    _ pointer: UnsafeMutableRawPointer?, _ key: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting a verification") {
        try context(pointer).beginVerifying(
            .verify, key: key, digestName: nil, isDigestOperation: false, params: params)
    }
}

private func signatureVerify(
    _ pointer: UnsafeMutableRawPointer?, _ signature: UnsafePointer<UInt8>?, _ signatureLength: Int,
    _ input: UnsafePointer<UInt8>?, _ inputLength: Int
) -> Int32 {
    reportingStatus("verifying") {
        try context(pointer).verify(signature: buffer(signature, signatureLength), input: buffer(input, inputLength))
    }
}

private func signatureVerifyRecoverInit(
    _ pointer: UnsafeMutableRawPointer?, _ key: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting a signature recovery") {
        try context(pointer).beginVerifying(
            .verifyRecover, key: key, digestName: nil, isDigestOperation: false, params: params)
    }
}

private func signatureVerifyRecover(
    _ pointer: UnsafeMutableRawPointer?, _ output: UnsafeMutablePointer<UInt8>?,
    _ outputLength: UnsafeMutablePointer<Int>?,
    _ capacity: Int, _ signature: UnsafePointer<UInt8>?, _ signatureLength: Int
) -> Int32 {
    reportingStatus("recovering signed data") {
        let context = try context(pointer)
        guard let output else {
            outputLength?.pointee = context.signatureLength ?? 0
            return
        }
        let recovered = try context.recover(signature: buffer(signature, signatureLength))
        try deliver(recovered, to: output, capacity: capacity, length: outputLength, what: "the recovered data")
    }
}

// MARK: - Digest-sign and digest-verify

private func signatureDigestSignInit(
    _ pointer: UnsafeMutableRawPointer?, _ digestName: UnsafePointer<CChar>?, _ key: UnsafeMutableRawPointer?,
    _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting a digest-sign") {
        try context(pointer).beginSigning(
            key: key, digestName: digestName.map { String(cString: $0) }, isDigestOperation: true,
            params: ParamReader(params))
    }
}

/// Update for both digest-sign (our running hash) and digest-verify (the default
/// provider's).
private func signatureDigestUpdate(_ pointer: UnsafeMutableRawPointer?, _ data: UnsafePointer<UInt8>?, _ length: Int)
    -> Int32
{
    reportingStatus("hashing for a signature") { try context(pointer).update(buffer(data, length)) }
}

private func signatureDigestSignFinal(
    _ pointer: UnsafeMutableRawPointer?, _ signature: UnsafeMutablePointer<UInt8>?,
    _ signatureLength: UnsafeMutablePointer<Int>?, _ capacity: Int
) -> Int32 {
    reportingStatus("signing") {
        let context = try context(pointer)
        try answer(context, signature, signatureLength, capacity) { try context.finishSigning() }
    }
}

/// One-shot EVP_DigestSign, which libssl uses for every handshake signature.
private func signatureDigestSign(
    _ pointer: UnsafeMutableRawPointer?, _ signature: UnsafeMutablePointer<UInt8>?,
    _ signatureLength: UnsafeMutablePointer<Int>?, _ capacity: Int, _ message: UnsafePointer<UInt8>?,
    _ messageLength: Int
) -> Int32 {
    reportingStatus("signing") {
        let context = try context(pointer)
        try answer(context, signature, signatureLength, capacity) {
            try context.sign(message: buffer(message, messageLength))
        }
    }
}

private func signatureDigestVerifyInit(
    _ pointer: UnsafeMutableRawPointer?, _ digestName: UnsafePointer<CChar>?, _ key: UnsafeMutableRawPointer?,
    _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting a digest-verify") {
        try context(pointer).beginVerifying(
            .verify, key: key, digestName: digestName.map { String(cString: $0) }, isDigestOperation: true,
            params: params)
    }
}

private func signatureDigestVerifyFinal(
    _ pointer: UnsafeMutableRawPointer?, _ signature: UnsafePointer<UInt8>?, _ signatureLength: Int
) -> Int32 {
    reportingStatus("verifying") { try context(pointer).finishVerifying(signature: buffer(signature, signatureLength)) }
}

// MARK: - Parameters

private func signatureGetContextParams(_ pointer: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("answering signature parameters") { try context(pointer).getParameters(params) }
}

private func signatureSetContextParams(_ pointer: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("setting signature parameters") { try context(pointer).setParameters(params) }
}

/// The digest's own parameters, handed to the running hash (or the default provider's).
private func signatureGetDigestParams(_ pointer: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("answering digest parameters") { try context(pointer).getDigestParameters(params) }
}

private func signatureGettableDigestParams(_ pointer: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    object(pointer, as: SignatureContext.self)?.digestParameterTables.gettable
}

private func signatureSetDigestParams(_ pointer: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("setting digest parameters") { try context(pointer).setDigestParameters(params) }
}

private func signatureSettableDigestParams(_ pointer: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    object(pointer, as: SignatureContext.self)?.digestParameterTables.settable
}
