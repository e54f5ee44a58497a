// The functions the OpenSSL core hands the provider at init: configuration lookup, error
// reporting and core BIO I/O. Kept in one place because keymgmt, decoder and encoder
// callbacks do not receive the provider context but still need them. Each is read from
// the core's table through its typed slot (Boundary/Slots.swift), so no cast is needed.

import COpenSSL
import CloudHSMCore
import Glibc

/// What the core gave us. Written once in `OSSL_provider_init`, read afterwards.
struct CoreFunctions {
    var handle: OpaquePointer?
    var getParams: @convention(c) (OpaquePointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32
    var newError: (@convention(c) (OpaquePointer?) -> Void)?
    var setErrorDebug: (@convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?) -> Void)?
    /// core_vset_error with the message as the one argument of a "%s" format (its C type
    /// takes a va_list, which cannot be spelled in a stored @convention(c) type).
    var setError: ((OpaquePointer?, UInt32, String) -> Void)?
    var bioReadEx:
        (@convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int, UnsafeMutablePointer<Int>?) -> Int32)?
    var bioWriteEx: (@convention(c) (OpaquePointer?, UnsafeRawPointer?, Int, UnsafeMutablePointer<Int>?) -> Int32)?
    /// BIO_tell and BIO_seek on a decoder's input.
    var bioCtrl: (@convention(c) (OpaquePointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int32)?

    init(handle: OpaquePointer?, dispatch: UnsafePointer<OSSL_DISPATCH>?) {
        self.handle = handle
        getParams = CoreSlot.getParams.function(in: dispatch) ?? { _, _ in 0 }
        newError = CoreSlot.newError.function(in: dispatch)
        setErrorDebug = CoreSlot.setErrorDebug.function(in: dispatch)
        if let vsetError = CoreSlot.vsetError.function(in: dispatch) {
            setError = { handle, reason, message in
                message.withCString { text in withVaList([text]) { vsetError(handle, reason, "%s", $0) } }
            }
        }
        bioReadEx = CoreSlot.bioReadEx.function(in: dispatch)
        bioWriteEx = CoreSlot.bioWriteEx.function(in: dispatch)
        bioCtrl = CoreSlot.bioCtrl.function(in: dispatch)
    }

    /// Reads string settings of the provider's section in openssl.cnf.
    func configurationValues(_ keys: [StaticString]) -> [String: String] {
        var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: keys.count)
        var result: [String: String] = [:]
        pointers.withUnsafeMutableBufferPointer { slots in
            var params = keys.enumerated().map { index, key in
                OSSL_PARAM_construct_utf8_ptr(
                    UnsafeMutablePointer(mutating: cString(key)), slots.baseAddress! + index, 0)
            }
            params.append(OSSL_PARAM_construct_end())
            _ = params.withUnsafeMutableBufferPointer { getParams(handle, $0.baseAddress) }
            for (index, key) in keys.enumerated() {
                if let value = slots[index] { result[key.description] = String(cString: value) }
            }
        }
        return result
    }

    /// Writes bytes to a core BIO (an encoder's output).
    func write(_ bio: OpaquePointer?, _ bytes: [UInt8]) throws {
        guard let bioWriteEx else { throw ProviderError(.configuration, "the OpenSSL core offers no BIO writer") }
        var offset = 0
        while offset < bytes.count {
            var written = 0
            let ok = bytes.withUnsafeBytes { raw in
                bioWriteEx(bio, raw.baseAddress! + offset, raw.count - offset, &written)
            }
            guard ok == 1, written > 0 else {
                throw ProviderError(.invalidInput, "writing the output failed after \(offset) of \(bytes.count) bytes")
            }
            offset += written
        }
    }
}

nonisolated(unsafe) var core = CoreFunctions(handle: nil, dispatch: nil)

/// Puts an error with our reason code and text on the application's error queue, where
/// `openssl` and libssl print it with the provider's name.
func raise(_ error: ProviderError, file: StaticString = #fileID, line: UInt = #line, function: StaticString = #function)
{
    guard let newError = core.newError, let setError = core.setError else { return }
    newError(core.handle)
    core.setErrorDebug?(core.handle, cString(file), Int32(line), cString(function))
    // OpenSSL keeps at most 1023 bytes of an error's text and keeps none at all when the
    // text is longer; a NUL would cut it anywhere: so escape, then cut visibly.
    let message = error.message.escapingControlCharacters.truncated(toUTF8Bytes: maximumErrorText)
    setError(core.handle, error.reason.rawValue, message)
}

/// What of an error message reaches OpenSSL's error queue (its buffer is 1024 bytes).
let maximumErrorText = 1000

/// Set CLOUDHSM_PROVIDER_TRACE=1 to see, on stderr, which provider functions OpenSSL
/// calls and what they answer: the quickest way to see why a key does not load.
let traceEnabled: Bool = getenv("CLOUDHSM_PROVIDER_TRACE") != nil

@inline(__always) func trace(_ message: @autoclosure () -> String) {
    guard traceEnabled else { return }
    fputs("cloudhsm[\(getpid())]: \(message())\n", stderr)
}
