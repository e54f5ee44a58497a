// The provider's error reasons. Each has a code OpenSSL prints with its text (through
// get_reason_strings) and a message naming the specific problem.

import COpenSSL
import CloudHSMCore

enum ProviderReason: UInt32, CaseIterable {
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
        case .privateKeyExportRefused: return "an HSM private key cannot be exported"
        case .configuration: return "CloudHSM provider configuration error"
        case .unsupported: return "unsupported by the CloudHSM provider"
        case .invalidInput: return "invalid input"
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
