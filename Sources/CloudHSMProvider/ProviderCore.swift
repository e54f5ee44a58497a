// The functions the OpenSSL core hands the provider at init: configuration lookup, error
// reporting and core BIO I/O. Kept in one place because keymgmt, decoder and encoder
// callbacks do not receive the provider context but still need them.

import COpenSSL
import CloudHSMCore
import Glibc

typealias CoreGetParams = @convention(c) (OpaquePointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32
typealias CoreNewError = @convention(c) (OpaquePointer?) -> Void
typealias CoreSetErrorDebug =
    @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?) ->
    Void
typealias CoreBIOReadEx =
    @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int, UnsafeMutablePointer<Int>?)
    -> Int32
typealias CoreBIOWriteEx = @convention(c) (OpaquePointer?, UnsafeRawPointer?, Int, UnsafeMutablePointer<Int>?) -> Int32
typealias CoreBIOCtrl = @convention(c) (OpaquePointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int32

/// What the core gave us. Written once in `OSSL_provider_init`, read afterwards.
struct CoreFunctions {
    var handle: OpaquePointer?
    var getParams: CoreGetParams?
    var newError: CoreNewError?
    var setErrorDebug: CoreSetErrorDebug?
    /// Kept untyped: its va_list parameter can only be called through the C shim.
    var vsetError: (@convention(c) () -> Void)?
    var bioReadEx: CoreBIOReadEx?
    var bioWriteEx: CoreBIOWriteEx?
    /// BIO_tell and BIO_seek on a decoder's input.
    var bioCtrl: CoreBIOCtrl?

    init(handle: OpaquePointer?, dispatch: UnsafePointer<OSSL_DISPATCH>?) {
        self.handle = handle
        var entry = dispatch
        while let current = entry, current.pointee.function_id != 0 {
            let function = current.pointee.function
            switch current.pointee.function_id {
            case OSSL_FUNC_CORE_GET_PARAMS: getParams = unsafeBitCast(function, to: CoreGetParams.self)
            case OSSL_FUNC_CORE_NEW_ERROR: newError = unsafeBitCast(function, to: CoreNewError.self)
            case OSSL_FUNC_CORE_SET_ERROR_DEBUG: setErrorDebug = unsafeBitCast(function, to: CoreSetErrorDebug.self)
            case OSSL_FUNC_CORE_VSET_ERROR: vsetError = function
            case OSSL_FUNC_BIO_READ_EX: bioReadEx = unsafeBitCast(function, to: CoreBIOReadEx.self)
            case OSSL_FUNC_BIO_WRITE_EX: bioWriteEx = unsafeBitCast(function, to: CoreBIOWriteEx.self)
            case OSSL_FUNC_BIO_CTRL: bioCtrl = unsafeBitCast(function, to: CoreBIOCtrl.self)
            default: break
            }
            entry = current + 1
        }
    }

    /// Reads string settings of the provider's section in openssl.cnf.
    func configurationValues(_ keys: [StaticString]) -> [String: String] {
        guard let getParams else { return [:] }
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
    func write(_ bio: OpaquePointer?, _ bytes: [UInt8]) -> Bool {
        guard let bioWriteEx else { return false }
        var offset = 0
        while offset < bytes.count {
            var written = 0
            let ok = bytes.withUnsafeBytes { raw in
                bioWriteEx(bio, raw.baseAddress! + offset, raw.count - offset, &written)
            }
            guard ok == 1, written > 0 else { return false }
            offset += written
        }
        return true
    }
}

nonisolated(unsafe) var core = CoreFunctions(handle: nil, dispatch: nil)

/// Puts an error with our reason code and text on the application's error queue, where
/// `openssl` and libssl print it with the provider's name.
func raise(_ error: ProviderError, file: StaticString = #fileID, line: UInt = #line, function: StaticString = #function)
{
    guard let newError = core.newError, let vsetError = core.vsetError else { return }
    newError(core.handle)
    core.setErrorDebug?(core.handle, cString(file), Int32(line), cString(function))
    // OpenSSL keeps at most 1023 bytes of an error's text and keeps none at all when the
    // text is longer; a NUL would cut it anywhere: so escape, then cut visibly.
    let message = error.message.escapingControlCharacters.truncated(toUTF8Bytes: maximumErrorText)
    cshim_vset_error(vsetError, core.handle, error.reason.rawValue, message)
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
