// getKeyInfo: which user owns a key, by the user id that listUsers in cloudhsm_mgmt_util
// shows, in the shape of AWS's key_mgmt_util.

import CloudHSMCore
import HSMClient

extension KeyManagementShell {
    func getKeyInfo(_ flags: Flags) throws {
        let handle = try flags.number("-k", what: "a key handle")
        let outcome = client.perform(.getAttributes(handle), key: handle)
        printReturned("Cfm3GetKey", outcome)
        if case .success(.attributes(let attributes)) = outcome.result.map(\.body) {
            print("")
            print("\tOwned by user \(attributes.owner)")
            print("")
            // Keys are never shared here; the line keeps AWS's shape for scripts.
            print("\talso, shared to following 0 user(s):")
            print("")
        }
        printStatus(outcome.attempts)
    }
}
