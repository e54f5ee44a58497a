// The cluster side of the store loader: which of the crypto user's private keys a
// `cloudhsm:` URI names, read with findKeys and getAttributes through the provider's one
// cluster client (the configuration, trust anchor and credentials every other HSM call
// uses). The nodes answer for the logged-in user only, so another user's keys are never
// seen. Every way a URI can fail to name exactly one private key is an error that says
// which: no such handle, a handle holding a public or secret key, no key with the label,
// several keys with it (their handles listed), a key type the provider does not hold.

import CloudHSMCore
import HSMClient

/// A private key the store found, as the cluster holds it.
struct StoredKey {
    let attributes: KeyAttributes
    /// The cluster the client is configured for, which the key reference names.
    let clusterID: String

    /// The reference a fake PEM of this key would hold.
    var reference: KeyReference {
        KeyReference(
            clusterID: clusterID, handle: attributes.handle, publicKeyInfo: attributes.publicKeyInfo,
            label: attributes.label.isEmpty ? nil : attributes.label)
    }
}

extension KeyService {
    /// The private keys `uri` names, in handle order. A handle or a label must name
    /// exactly one key; `cloudhsm:` alone lists every private key of a type the provider
    /// holds (others are left out). `alias` (OSSL_STORE_find by alias) keeps only the
    /// keys with that label, without the one-key rule.
    func privateKeys(matching uri: StoreURI, alias: String?) throws -> [StoredKey] {
        let search = StoreSearch(service: self, client: try loggedInClient())
        if let alias, let label = uri.label, alias != label { return [] }
        let keys: [KeyAttributes]
        if let handle = uri.handle {
            keys = [try search.privateKey(handle: handle, label: uri.label)]
        } else if let label = uri.label {
            keys = [try search.privateKey(label: label)]
        } else {
            keys = try search.everyPrivateKey(label: alias)
        }
        return keys.filter { alias == nil || $0.label == alias }.map {
            StoredKey(attributes: $0, clusterID: search.client.configuration.clusterID)
        }
    }
}

/// One lookup in the cluster, for one store.
private struct StoreSearch {
    let service: KeyService
    let client: ClusterClient

    /// "crypto user 'bob' on cluster 'local-dev'", for messages.
    private var whose: String {
        let user = client.credentials.map { " '\(KeyService.shown($0.user))'" } ?? ""
        return "crypto user\(user) on cluster '\(KeyService.shown(client.configuration.clusterID))'"
    }

    func privateKey(handle: KeyHandle, label: String?) throws -> KeyAttributes {
        let result = client.perform(.getAttributes(handle), key: handle).result
        if case .failure(let error) = result, error.code == .invalidHandle || error.code == .keyAccessDenied {
            throw ProviderError(.keyNotFound, "no key with handle \(handle) for \(whose): \(error.code.meaning)")
        }
        let attributes = try attributes(from: result, handle: handle)
        guard attributes.keyClass == .privateKey else {
            var message = "key handle \(handle) is \(attributes.kindDescription), not a private key"
            if attributes.keyClass == .publicKey,
                let pair = service.privateKeyHandle(pairedWith: attributes, near: handle, client: client)
            {
                message += "; the private key of this pair is handle \(pair) (cloudhsm:handle=\(pair))"
            }
            throw ProviderError(.keyNotFound, message)
        }
        if let label, attributes.label != label {
            throw ProviderError(
                .keyNotFound,
                "key handle \(handle) is labelled '\(KeyService.shown(attributes.label))', not "
                    + "'\(KeyService.shown(label))'")
        }
        return try supported(attributes)
    }

    func privateKey(label: String) throws -> KeyAttributes {
        let handles = try findKeys(KeyFilter(keyClass: .privateKey, label: label))
        guard let handle = handles.first else {
            var message = "\(whose) has no private key labelled '\(KeyService.shown(label))'"
            let others = (try? findKeys(KeyFilter(label: label))) ?? []
            if !others.isEmpty {
                message +=
                    " (key handle\(others.count == 1 ? "" : "s") \(list(others)) with that label "
                    + "\(others.count == 1 ? "is not a private key" : "are not private keys"))"
            }
            throw ProviderError(.keyNotFound, message)
        }
        guard handles.count == 1 else {
            throw ProviderError(
                .invalidInput,
                "label '\(KeyService.shown(label))' names \(handles.count) private keys of \(whose): handles "
                    + "\(list(handles)); name one with cloudhsm:handle=N")
        }
        let result = client.perform(.getAttributes(handle), key: handle).result
        return try supported(attributes(from: result, handle: handle))
    }

    /// Every private key of the user (with `label`, when given) whose type the provider holds.
    func everyPrivateKey(label: String?) throws -> [KeyAttributes] {
        var found: [KeyAttributes] = []
        for handle in try findKeys(KeyFilter(keyClass: .privateKey, label: label)) {
            let result = client.perform(.getAttributes(handle), key: handle).result
            // Deleted since findKeys answered: it is no longer in the store.
            if case .failure(let error) = result, error.code == .invalidHandle { continue }
            let attributes = try attributes(from: result, handle: handle)
            guard attributes.keyClass == .privateKey else { continue }
            guard Self.isHeld(attributes) else {
                trace(
                    "store: key handle \(handle) is \(attributes.kindDescription), a type this provider does not hold")
                continue
            }
            found.append(attributes)
        }
        return found
    }

    /// The handles every node that answered knows, in order: a key made a moment ago may
    /// not have reached every node yet (key_mgmt_util's findKey asks them all the same way).
    private func findKeys(_ filter: KeyFilter) throws -> [KeyHandle] {
        var handles = Set<KeyHandle>()
        var answered = false
        var failure: HSMError?
        for result in client.broadcast(.findKeys(filter)) {
            do {
                guard case .handles(let found) = try result.result.get().get() else {
                    throw HSMError(.internalError, "findKeys: unexpected answer")
                }
                handles.formUnion(found)
                answered = true
            } catch let error as HSMError {
                failure = failure ?? error
            }
        }
        if !answered, let failure {
            throw ProviderError(hsm: failure, doing: "listing the keys of \(whose)")
        }
        return handles.sorted()
    }

    private func attributes(from result: Result<HSMResponse, HSMError>, handle: KeyHandle) throws -> KeyAttributes {
        let body: ResponseBody
        switch result {
        case .success(let response):
            do { body = try response.get() } catch let error as HSMError {
                throw ProviderError(hsm: error, doing: "reading key handle \(handle)")
            }
        case .failure(let error):
            throw ProviderError(hsm: error, doing: "reading key handle \(handle)")
        }
        guard case .attributes(let attributes) = body else {
            throw ProviderError(.hsmOperationFailed, "reading key handle \(handle): unexpected answer")
        }
        return attributes
    }

    private func supported(_ attributes: KeyAttributes) throws -> KeyAttributes {
        guard Self.isHeld(attributes) else {
            let held = Algorithms.keyTypes.map { $0.displayName }.joined(separator: ", ")
            let label = attributes.label.isEmpty ? "" : " (label '\(KeyService.shown(attributes.label))')"
            throw ProviderError(
                .unsupported,
                "key handle \(attributes.handle)\(label) is \(attributes.kindDescription): "
                    + "\(attributes.keyType.name) keys are not supported by this provider yet (it holds \(held) keys)")
        }
        return attributes
    }

    private static func isHeld(_ attributes: KeyAttributes) -> Bool {
        Algorithms.keyTypes.contains { $0.hsmKeyType == attributes.keyType }
    }

    private func list(_ handles: [KeyHandle]) -> String {
        let shown = handles.prefix(16).map(String.init).joined(separator: ", ")
        return handles.count > 16 ? shown + " and \(handles.count - 16) more" : shown
    }
}

extension KeyType {
    /// "RSA", "EC": how messages name the HSMs' key types.
    fileprivate var name: String {
        switch self {
        case .rsa: return "RSA"
        case .ec: return "EC"
        case .aes: return "AES"
        case .genericSecret: return "generic secret"
        }
    }
}
