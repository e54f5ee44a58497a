// A private OpenSSL library context with the default provider loaded. Everything in
// this package does its crypto and TLS in one of these, never in the NULL context: the
// provider runs inside applications whose default context may route RSA back to us.

import COpenSSL

/// Owns an `OSSL_LIB_CTX` and the default provider loaded into it.
public final class CryptoContext: @unchecked Sendable {
    // OpenSSL's library contexts are thread-safe once created; this object only reads
    // its two pointers after init, so sharing it across threads is safe.
    /// The `OSSL_LIB_CTX`, for OpenSSL calls made outside this module (the provider).
    public let pointer: OpaquePointer
    private let defaultProvider: OpaquePointer

    public init() throws {
        // Our objects may be released after main returns (threads still unwinding); with
        // OpenSSL's atexit cleanup they would free into a torn-down library. In a host
        // process that initialised OpenSSL already this call changes nothing.
        OPENSSL_init_crypto(UInt64(OPENSSL_INIT_NO_ATEXIT), nil)
        guard let context = OSSL_LIB_CTX_new() else {
            throw OpenSSLError.capture("creating a library context")
        }
        guard let provider = OSSL_PROVIDER_load(context, "default") else {
            let error = OpenSSLError.capture("loading the default provider")
            OSSL_LIB_CTX_free(context)
            throw error
        }
        self.pointer = context
        self.defaultProvider = provider
    }

    deinit {
        OSSL_PROVIDER_unload(defaultProvider)
        OSSL_LIB_CTX_free(pointer)
    }
}

/// An OpenSSL failure with the library's own error text, drained from its error queue.
public struct OpenSSLError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let reasons: [String]

    public init(operation: String, reasons: [String]) {
        self.operation = operation
        self.reasons = reasons
    }

    /// Builds an error from, and empties, this thread's OpenSSL error queue.
    public static func capture(_ operation: String) -> OpenSSLError {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return OpenSSLError(operation: operation, reasons: reasons)
    }

    public var description: String {
        reasons.isEmpty ? "\(operation) failed" : "\(operation) failed: \(reasons.joined(separator: "; "))"
    }
}
