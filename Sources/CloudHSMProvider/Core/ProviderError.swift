// The provider's one error convention. Everything below the C entry points is Swift that
// throws `ProviderError` (a reason code OpenSSL prints with its text, and a message naming
// the specific problem). Each entry point runs its work in `reportingStatus` or
// `reportingResult`, which raise a thrown error on the core's queue exactly once and
// answer OpenSSL's failure value. No entry point fails without a reason.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

enum ProviderReason: UInt32, CaseIterable {
    // The numbers are stable: cloudhsm_check reads them.
    case notLoggedIn = 1
    case loginFailed = 2
    case keyNotFound = 3
    case keyFromAnotherCluster = 4
    case publicKeyMismatch = 5
    case clusterUnreachable = 6
    case malformedKeyReference = 7
    case hsmOperationFailed = 8
    case privateKeyExportRefused = 9
    case configuration = 10
    case unsupported = 11
    case invalidInput = 12
    case signatureMismatch = 13
    case openSSLFailed = 14

    var text: StaticString {
        switch self {
        case .notLoggedIn: return "not logged in to the HSM cluster (set n3fips_password or CLOUDHSM_PIN)"
        case .loginFailed: return "HSM login failed"
        case .keyNotFound: return "key not found on the HSM cluster"
        case .keyFromAnotherCluster: return "key belongs to another HSM cluster"
        case .publicKeyMismatch: return "public key in the key file does not match the HSM's key"
        case .clusterUnreachable: return "no HSM node reachable"
        case .malformedKeyReference: return "malformed CloudHSM key reference"
        case .hsmOperationFailed: return "HSM operation failed"
        case .privateKeyExportRefused: return "the private half of an HSM key never leaves the HSMs"
        case .configuration: return "CloudHSM provider configuration error"
        case .unsupported: return "unsupported by the CloudHSM provider"
        case .invalidInput: return "invalid input"
        case .signatureMismatch: return "signature does not verify"
        case .openSSLFailed: return "OpenSSL operation failed"
        }
    }
}

struct ProviderError: Error, CustomStringConvertible {
    let reason: ProviderReason
    let message: String

    init(_ reason: ProviderReason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    var description: String { message }

    /// Maps an HSM or client failure to the reason a user needs to see.
    init(hsm error: HSMError, doing what: String) {
        let reason: ProviderReason
        switch error.code {
        case .loginFailed, .userLocked: reason = .loginFailed
        case .notLoggedIn: reason = .notLoggedIn
        case .invalidHandle, .keyAccessDenied: reason = .keyNotFound
        case .nodeUnreachable, .tlsFailure, .timedOut, .connectionLost, .noNodeAvailable: reason = .clusterUnreachable
        default: reason = .hsmOperationFailed
        }
        self.init(reason, "\(what): \(error)")
    }

    /// Any error as the provider reports it; a `ProviderError` stays as it is.
    init(_ error: any Error, doing what: String) {
        switch error {
        case let error as ProviderError: self = error
        case let error as HSMError: self.init(hsm: error, doing: what)
        case let error as OpenSSLError: self.init(.openSSLFailed, "\(what): \(error)")
        case let error as CryptoError: self.init(.invalidInput, "\(what): \(error)")
        default: self.init(.hsmOperationFailed, "\(what): \(error)")
        }
    }
}

/// Runs the work of an entry point that answers 1 or 0: 1 when it returns, 0 when it
/// throws, with the error raised on OpenSSL's queue.
func reportingStatus(
    _ what: @autoclosure () -> String = "", file: StaticString = #fileID, line: UInt = #line,
    function: StaticString = #function, _ work: () throws -> Void
) -> Int32 {
    do {
        try work()
        return 1
    } catch {
        report(error, what(), file: file, line: line, function: function)
        return 0
    }
}

/// Runs the work of an entry point that answers an object: nil when it throws, with the
/// error raised on OpenSSL's queue.
func reportingResult<T>(
    _ what: @autoclosure () -> String = "", file: StaticString = #fileID, line: UInt = #line,
    function: StaticString = #function, _ work: () throws -> T
) -> T? {
    do {
        return try work()
    } catch {
        report(error, what(), file: file, line: line, function: function)
        return nil
    }
}

private func report(_ error: any Error, _ what: String, file: StaticString, line: UInt, function: StaticString) {
    let reported = ProviderError(error, doing: what.isEmpty ? "\(function)" : what)
    trace("\(function) failed: \(reported)")
    raise(reported, file: file, line: line, function: function)
}

/// The reason strings table for `get_reason_strings`, built once.
let reasonStrings: UnsafePointer<OSSL_ITEM> = {
    let reasons = ProviderReason.allCases
    let table = UnsafeMutablePointer<OSSL_ITEM>.allocate(capacity: reasons.count + 1)
    for (index, reason) in reasons.enumerated() {
        table[index] = OSSL_ITEM(
            id: UInt32(reason.rawValue), ptr: UnsafeMutableRawPointer(mutating: cString(reason.text)))
    }
    table[reasons.count] = OSSL_ITEM(id: 0, ptr: nil)
    return UnsafePointer(table)
}()
